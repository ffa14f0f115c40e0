"""Table 1 and Fig. 3 of the study: batch size 16 / 32 / 64 (EfficientNet, Adam 1e-4, per-step cosine)."""

from __future__ import annotations

from experiments import study_results
from experiments.figures import curves
from experiments.runner import Experiment, run_experiment
from experiments.tables import (BEST_VAL_MAP5, IMAGES_PER_S, TEST_MAP1, TEST_MAP5, TRAIN_LOSS, VAL_MAP5, WALL,
                                Table)  # fmt: skip

EXPERIMENT = Experiment(
    name="sweep_batch",
    title="Table 1, Fig. 3 — batch size",
    about="EfficientNet fine-tuned with the preset's recipe (study: Adam 1e-4, per-step cosine, 20 epochs) at "
    "batch 16, 32 and 64: loss, MAP@5 and wall time per run.",
    settings=lambda preset: {f"batch {b}": dict(batch_size=b) for b in preset.batch_sizes},
    table=Table(
        columns=(TRAIN_LOSS, VAL_MAP5, BEST_VAL_MAP5, TEST_MAP5, TEST_MAP1, WALL, IMAGES_PER_S),
        reference=lambda label, overrides: study_results.TABLE1.get(overrides["batch_size"]),
        reference_note="B0, real photos",
    ),
    figures=(curves("fig3_batch_size.png"),),
    notes=(
        "the same learning rate at every batch size (no linear scaling), as the study; a larger batch therefore "
        "takes fewer, equally large steps per epoch. The cosine's T_max follows each run's own step count.",
        "the last partial batch of an epoch is dropped (knifejax's loader; the study's PyTorch loader kept it).",
        "wall time covers everything a run does; at the quick and smoke scales compiling the step and per-epoch "
        "checkpoints and plots take a large share of it, so compare speeds by train img/s, measured over the "
        "epochs after the first (which includes compilation).",
        *study_results.disagreements(),
    ),
    study_reference=f"the study's columns: its Table 1 (EfficientNet-B0 on a V100, 20 epochs); with "
    f"{study_results.TEST_IMAGES} test images a MAP@5 has a standard error of about 0.02, so most of its gaps are "
    "noise.",
)


def main(argv: list[str] | None = None) -> dict:
    return run_experiment(EXPERIMENT, argv)


if __name__ == "__main__":
    main()
