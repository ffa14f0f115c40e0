"""Training: torch-equal optimizers and schedules (`optim`), jit train/eval steps over one state pytree
(`steps`), transfer modes (`transfer`), data parallelism (`sharding`), and whole runs — configuration
(`config`), data set-up (`data_setup`), the resumable loop (`loop.fit`, and `loop.fit_many` for runs side by side), checkpoints and the run directory
(`checkpoint`, `run`)."""

from knifejax.train.optim import (
    OPTIMIZERS,
    SCHEDULES,
    Hyperparameters,
    current_learning_rate,
    decay_mask_timm,
    hyperparameters,
    make_optimizer,
    make_schedule,
)
from knifejax.train.steps import TrainState, init_state, make_eval_step, make_members_train_step, make_train_step, to_model

__all__ = [
    "TrainState",
    "init_state",
    "make_eval_step",
    "make_members_train_step",
    "make_train_step",
    "to_model",
    "OPTIMIZERS",
    "SCHEDULES",
    "Hyperparameters",
    "current_learning_rate",
    "decay_mask_timm",
    "hyperparameters",
    "make_optimizer",
    "make_schedule",
]
