"""Fig. 2 of the study: per-step cosine annealing vs a constant rate, for each learning rate.

The constant-rate runs are exactly sweep_lr's: when `python -m experiments.sweep_lr` has run with the same
preset into the folder beside this one's (default: runs/experiments/sweep_lr), they are reused, not trained
again (and if this script runs first, sweep_lr reuses them from here).
"""

from __future__ import annotations

from experiments.figures import curves, final_bars, lr_schedules, paired_style
from experiments.presets import format_lr
from knifejax import study
from experiments.runner import Experiment, run_experiment
from experiments.tables import Table

SCHEDULES = ("constant", "cosine")

EXPERIMENT = Experiment(
    name="sweep_scheduler",
    title="Fig. 2 — cosine annealing per step vs constant rate",
    about="Adam at 1e-2 … 1e-5, each with a constant rate and with torch's CosineAnnealingLR(T_max = all steps of "
    "the run) stepped every iteration; (a) the rate over the steps, (b) the final loss and MAP@5 per rate and "
    "schedule.",
    settings=lambda preset: {
        f"lr={format_lr(lr)} {schedule}": dict(lr=lr, schedule=schedule)
        for lr in study.LEARNING_RATES
        for schedule in SCHEDULES
    },
    table=Table(),
    figures=(
        lr_schedules("fig2a_lr_schedules.png", t_max_periodic=20),
        final_bars("fig2b_final_loss.png", x_key="lr", series_key="schedule"),
        curves("fig2c_curves.png", style=paired_style("lr", "schedule", {"constant": "--", "cosine": "-"})),
    ),
    notes=(
        "cosine: eta_min 0, T_max = epochs × steps per epoch, stepped every iteration, as the study's first baseline. "
        "The later baseline's T_max=20 per step (the rate cycles every 40 steps) is drawn in (a) as "
        "cosine-periodic, not trained.",
        "the constant-rate runs are sweep_lr's (reused when that folder holds them).",
    ),
)


def main(argv: list[str] | None = None) -> dict:
    return run_experiment(EXPERIMENT, argv)


if __name__ == "__main__":
    main()
