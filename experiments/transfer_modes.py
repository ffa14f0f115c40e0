"""Fig. 5 of the study: training from scratch vs transfer (every layer trains from ImageNet weights) vs
fine-tuning with the early stages frozen."""

from __future__ import annotations

from experiments.figures import curves
from experiments.runner import Experiment, run_experiment
from experiments.tables import DEFAULT_COLUMNS, IMAGES_PER_S, TRAINABLE, WALL, Table

# Stem and the first three block stages of an EfficientNet (strides 2, 4 and 8, up to 40 channels): the
# layers whose edge and texture detectors transfer across image domains. `model.stages()` lists them.
FROZEN_STAGES = 4

EXPERIMENT = Experiment(
    name="transfer_modes",
    title="Fig. 5 — from scratch vs transfer vs fine-tune",
    about="EfficientNet trained from a random initialisation, from ImageNet weights with every layer training "
    f"(transfer), and from ImageNet weights with its first {FROZEN_STAGES} stages frozen (fine-tune), with the "
    "preset's recipe.",
    settings=lambda preset: {
        "from scratch": dict(pretrained=None),
        "transfer (all layers train)": dict(pretrained="default"),
        f"fine-tune (first {FROZEN_STAGES} stages frozen)": dict(pretrained="default", freeze_stages=FROZEN_STAGES),
    },
    table=Table(columns=(TRAINABLE, *DEFAULT_COLUMNS, IMAGES_PER_S, WALL)),
    figures=(curves("fig5_transfer_modes.png"),),
    notes=(
        f"fine-tune freezes the first {FROZEN_STAGES} entries of the model's `stages()` — for EfficientNet the "
        "stem and the first three block stages (strides 2 to 8); the study does not say which layers it froze. "
        "Frozen parameters get no updates and their BatchNorm layers keep their ImageNet running statistics "
        "(`frozen_bn_eval`).",
        "the same learning rate for all three; a network trained from scratch would usually get a larger one.",
    ),
    study_reference="the study gives this comparison as curves (its Fig. 5) without numbers to set beside these.",
)


def main(argv: list[str] | None = None) -> dict:
    return run_experiment(EXPERIMENT, argv)


if __name__ == "__main__":
    main()
