"""Training utilities: torch-equal optimizers and learning-rate schedules."""

from knifejax.train.optim import (
    OPTIMIZERS,
    SCHEDULES,
    current_learning_rate,
    decay_mask_timm,
    make_optimizer,
    make_schedule,
)

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "current_learning_rate",
    "decay_mask_timm",
    "make_optimizer",
    "make_schedule",
]
