"""Fig. 1 of the study: the learning rate (EfficientNet, Adam, constant rate).

    python -m experiments.sweep_lr            # quick preset, minutes on a 2-core CPU
    python -m experiments.sweep_lr --help
"""

from __future__ import annotations

from experiments.figures import curves
from experiments.presets import format_lr
from knifejax import study
from experiments.runner import Experiment, run_experiment
from experiments.tables import Table

EXPERIMENT = Experiment(
    name="sweep_lr",
    title="Fig. 1 — learning rate (Adam, constant rate)",
    about="EfficientNet fine-tuned with Adam at a constant learning rate of 1e-2, 1e-3, 5e-4, 1e-4 or 1e-5; "
    "training loss (log scale) and validation MAP@5 per epoch.",
    settings=lambda preset: {f"lr={format_lr(lr)}": dict(lr=lr, schedule="constant") for lr in study.LEARNING_RATES},
    table=Table(),
    figures=(curves("fig1_learning_rate.png"),),
    notes=(
        "constant rate, no schedule, so that the rate alone varies (the study's figure is of constant rates; "
        "sweep_scheduler compares them with per-step cosine, reusing these runs).",
        "batch size and epochs: the preset's (the study does not state the batch of this sweep; its default is 32).",
    ),
)


def main(argv: list[str] | None = None) -> dict:
    return run_experiment(EXPERIMENT, argv)


if __name__ == "__main__":
    main()
