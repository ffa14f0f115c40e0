"""Model families. Importing this package registers every architecture."""

from knifejax.models import efficientnet, resnet  # noqa: F401  (registration)
from knifejax.models.registry import create_model, get_pretrained_cfg, list_models, list_pretrained_tags

__all__ = ["create_model", "get_pretrained_cfg", "list_models", "list_pretrained_tags"]
