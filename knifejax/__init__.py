"""knifejax: fine-grained image classification in JAX with timm-equal Flax NNX models."""

from knifejax.ensemble import Ensemble, StackerConfig, average_scores, build_ensemble, load_ensemble
from knifejax.explain import grad_cam
from knifejax.io import CheckpointError, open_state_dict, read_state_dict
from knifejax.metrics import map_at_k, top_k_accuracy
from knifejax.models import create_model, get_pretrained_cfg, list_models, list_pretrained_tags
from knifejax.models.pretrained import PretrainedUnavailableError
from knifejax.preprocess import preprocess
from knifejax.train import current_learning_rate, decay_mask_timm, make_optimizer, make_schedule
from knifejax.train.config import TrainConfig
from knifejax.train.loop import fit, fit_many, side_by_side_groups
from knifejax.train.run import load_run
from knifejax.weights import (
    NonFiniteWeightsError,
    WeightMismatchError,
    load_timm_weights,
    save_timm_weights,
    timm_state_dict,
)
from knifejax.xla_cpu import apply_xla_cpu_flags

__all__ = [
    "CheckpointError",
    "Ensemble",
    "NonFiniteWeightsError",
    "PretrainedUnavailableError",
    "StackerConfig",
    "TrainConfig",
    "WeightMismatchError",
    "apply_xla_cpu_flags",
    "average_scores",
    "build_ensemble",
    "create_model",
    "current_learning_rate",
    "decay_mask_timm",
    "fit",
    "fit_many",
    "get_pretrained_cfg",
    "grad_cam",
    "list_models",
    "list_pretrained_tags",
    "load_ensemble",
    "load_run",
    "load_timm_weights",
    "make_optimizer",
    "make_schedule",
    "open_state_dict",
    "map_at_k",
    "preprocess",
    "read_state_dict",
    "save_timm_weights",
    "side_by_side_groups",
    "timm_state_dict",
    "top_k_accuracy",
]
