"""Table 3 and Fig. 6 of the study: CNN architectures — EfficientNet-B0, ResNet-18, MobileNetV3, SKResNet-18
(and EfficientNet-B3 trained longer) — with the same recipe.

Offline (quick and smoke presets) only EfficientNet-Lite0 has ImageNet weights, so the other architectures
train from scratch there, and Lite0 runs twice, from its weights and from scratch, so that the architectures
can be compared on equal terms as well. Every row says how it started.
"""

from __future__ import annotations

from experiments.figures import curves
from experiments.presets import Preset
from experiments.runner import Experiment, run_experiment
from experiments.tables import DEFAULT_COLUMNS, IMAGES_PER_S, PARAMETERS, WALL, Table

B3_EPOCHS = 55  # the study's long EfficientNet-B3 run


def settings(preset: Preset) -> dict[str, dict]:
    if preset.study_recipe:
        return {
            "EfficientNet-B0": dict(model="tf_efficientnet_b0"),
            "ResNet-18": dict(model="resnet18"),
            "MobileNetV3-Large": dict(model="mobilenetv3_large_100"),
            "SKResNet-18": dict(model="skresnet18"),
            f"EfficientNet-B3, {B3_EPOCHS} epochs": dict(model="tf_efficientnet_b3", epochs=B3_EPOCHS),
        }
    return {
        "EfficientNet-Lite0, ImageNet weights": dict(model="tf_efficientnet_lite0", pretrained="default"),
        "EfficientNet-Lite0, from scratch": dict(model="tf_efficientnet_lite0", pretrained=None),
        "ResNet-18, from scratch": dict(model="resnet18", pretrained=None),
        "MobileNetV3-Large, from scratch": dict(model="mobilenetv3_large_100", pretrained=None),
        "SKResNet-18, from scratch": dict(model="skresnet18", pretrained=None),
    }


EXPERIMENT = Experiment(
    name="compare_architectures",
    title="Table 3, Fig. 6 — CNN architectures",
    about="EfficientNet, ResNet-18, MobileNetV3-Large and SKResNet-18 trained with the same recipe; parameters, "
    "loss and MAP@5 (the study adds an EfficientNet-B3 trained for 55 epochs).",
    settings=settings,
    table=Table(
        columns=(PARAMETERS, *DEFAULT_COLUMNS, IMAGES_PER_S, WALL),
        reference={"tf_efficientnet_b0": 0.661, "resnet18": 0.586, "mobilenetv3_large_100": 0.513,
                   "skresnet18": 0.403, "tf_efficientnet_b3": 0.786},  # fmt: skip
        reference_key="model",
        reference_header="study MAP@5 (ImageNet weights, real photos)",
    ),
    figures=(curves("fig6_architectures.png"),),
    notes=(
        "parameters: with this run's classifier (one output per class), so fewer than the ImageNet models' counts.",
        "study preset: every architecture from its default timm ImageNet weights (`--pretrained NAME=FILE` for local "
        f"files), 224 px for all, EfficientNet-B3 as `tf_efficientnet_b3` for {B3_EPOCHS} epochs; the other rows the "
        "preset's 20.",
        "the study's EfficientNet-B0 number is its batch-32 run (Table 1); the others are its Table 3.",
    ),
    study_reference="the study (real photos, ImageNet weights, 20 epochs): EfficientNet-B0 0.661, ResNet-18 0.586, "
    "MobileNetV3 0.513, SKResNet-18 0.403; EfficientNet-B3 0.786 after 55 epochs.",
)


def main(argv: list[str] | None = None) -> dict:
    return run_experiment(EXPERIMENT, argv)


if __name__ == "__main__":
    main()
