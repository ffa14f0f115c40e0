"""knifejax: fine-grained image classification in JAX with timm-equal Flax NNX models."""

from knifejax.io import CheckpointError, read_state_dict
from knifejax.models import create_model, get_pretrained_cfg, list_models, list_pretrained_tags
from knifejax.models.pretrained import PretrainedUnavailableError
from knifejax.preprocess import preprocess
from knifejax.weights import WeightMismatchError, load_timm_weights, save_timm_weights, timm_state_dict

__all__ = [
    "CheckpointError",
    "PretrainedUnavailableError",
    "WeightMismatchError",
    "create_model",
    "get_pretrained_cfg",
    "list_models",
    "list_pretrained_tags",
    "load_timm_weights",
    "preprocess",
    "read_state_dict",
    "save_timm_weights",
    "timm_state_dict",
]
