"""Table 3 and Fig. 6 of the study: CNN architectures — EfficientNet-B0, ResNet-18, MobileNetV3, SKResNet-18
(and EfficientNet-B3 trained longer) — with the same recipe. The study preset trains each from the weights the
study loaded (`knifejax.study.ARCHITECTURES`: timm 1.0 tags).

Offline (quick and smoke presets) only EfficientNet-Lite0 has ImageNet weights, so the other architectures
train from scratch there, and Lite0 runs twice, from its weights and from scratch, so that the architectures
can be compared on equal terms as well. Every row says how it started.
"""

from __future__ import annotations

from experiments import study_results
from experiments.figures import curves
from experiments.presets import Preset
from experiments.runner import Experiment, run_experiment
from experiments.tables import DEFAULT_COLUMNS, IMAGES_PER_S, PARAMETERS, WALL, Table
from knifejax import study
from knifejax.models.registry import split_model_name


def _study_label(architecture: study.Architecture) -> str:
    return architecture.label + (f", {architecture.epochs} epochs" if architecture.epochs else "")


def settings(preset: Preset) -> dict[str, dict]:
    if preset.study_recipe:
        return {_study_label(a): dict(model=a.model, **({"epochs": a.epochs} if a.epochs else {}))
                for a in study.ARCHITECTURES}  # fmt: skip
    return {
        "EfficientNet-Lite0, ImageNet weights": dict(model="tf_efficientnet_lite0", pretrained="default"),
        "EfficientNet-Lite0, from scratch": dict(model="tf_efficientnet_lite0", pretrained=None),
        "ResNet-18, from scratch": dict(model="resnet18", pretrained=None),
        "MobileNetV3-Large, from scratch": dict(model="mobilenetv3_large_100", pretrained=None),
        "SKResNet-18, from scratch": dict(model="skresnet18", pretrained=None),
    }


def ensemble_members(preset: Preset) -> list[str]:
    """The settings whose runs the ensembles combine: the study's four members at the study preset (its
    EfficientNet-B3 stays a Table 3 row), every setting at the others."""
    if preset.study_recipe:
        return [_study_label(a) for a in study.ARCHITECTURES if a.ensemble_member]
    return list(settings(preset))


def _study_b3() -> study.Architecture:
    return next(a for a in study.ARCHITECTURES if a.epochs)


def study_table3() -> str:
    """Every row of the study's Table 3, whichever rows a preset trains (quick and smoke have no B0 nor B3)."""
    rows = []
    for architecture in study.ARCHITECTURES:
        reading = study_results.TABLE3[split_model_name(architecture.model)[0]]
        longer = f" after {reading.epochs} epochs ({reading.minutes / 60:g} h)" if reading.epochs != 20 else ""
        rows.append(f"{architecture.label} {reading.map5:.3f}{longer}")
    return ", ".join(rows)


EXPERIMENT = Experiment(
    name="compare_architectures",
    title="Table 3, Fig. 6 — CNN architectures",
    about="EfficientNet, ResNet-18, MobileNetV3-Large and SKResNet-18 trained with the same recipe; parameters, "
    "loss and MAP@5 (the study adds an EfficientNet-B3 trained for 55 epochs).",
    settings=settings,
    table=Table(
        columns=(PARAMETERS, *DEFAULT_COLUMNS, IMAGES_PER_S, WALL),
        reference=lambda label, overrides: study_results.TABLE3.get(split_model_name(overrides["model"])[0]),
        reference_note="ImageNet weights, real photos",
    ),
    figures=(curves("fig6_architectures.png"),),
    notes=(
        "parameters: with this run's classifier (one output per class), so fewer than the ImageNet models' counts.",
        "study preset: every architecture from the ImageNet weights the study loaded ("
        + ", ".join(f"{a.label} `{a.model}`" for a in study.ARCHITECTURES)
        + f"; `--weights-dir DIR` for local files), 224 px and ImageNet mean/std for all as in the study, "
        f"EfficientNet-B3 for {_study_b3().epochs} epochs and the other rows the preset's.",
        f"the study calls its MobileNet a model of {study_results.MOBILENET_PARAMETERS / 1e6:.0f}M parameters; "
        "timm's `mobilenetv3_large_100` compared here has 5.5 M (with ImageNet's 1000 classes), so the study's "
        "count is not this model's, and which MobileNet it trained is uncertain.",
        f"ensembles (Table 4) combine the study's four members; EfficientNet-B3 ({_study_b3().epochs} epochs) is "
        "a row of this table only.",
        *study_results.disagreements(),
    ),
    study_reference="the study's column: its Table 3 (real photos, ImageNet weights, 20 epochs unless marked): "
    + study_table3() + ".",
)


def main(argv: list[str] | None = None) -> dict:
    return run_experiment(EXPERIMENT, argv)


if __name__ == "__main__":
    main()
