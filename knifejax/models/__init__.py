"""Model families. Importing this package registers every architecture."""

from knifejax.models import efficientnet, mobilenetv3, resnet, skresnet, vit  # noqa: F401  (registration)
from knifejax.models.registry import create_model, get_pretrained_cfg, list_models, list_pretrained_tags

__all__ = ["create_model", "get_pretrained_cfg", "list_models", "list_pretrained_tags"]
