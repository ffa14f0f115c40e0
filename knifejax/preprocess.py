"""Images -> the normalised NHWC float32 batch a model expects, driven by its `pretrained_cfg`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def _to_pil(image: Any) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"expected uint8 images (H, W[, C]), got dtype {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected an image of shape (H, W), (H, W, 1|3|4), got {array.shape}")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return Image.fromarray(np.ascontiguousarray(array[..., :3]))


def _resize(image: Image.Image, size: tuple[int, int], mode: str, crop_pct: float, resample) -> Image.Image:
    height, width = size
    if mode == "squash":
        return image.resize((width, height), resample)
    if mode == "center_crop":
        scale_h, scale_w = int(height / crop_pct), int(width / crop_pct)
        ratio = max(scale_h / image.height, scale_w / image.width)
        resized = image.resize((round(image.width * ratio), round(image.height * ratio)), resample)
        left = (resized.width - width) // 2
        top = (resized.height - height) // 2
        return resized.crop((left, top, left + width, top + height))
    raise ValueError(f"resize_mode must be 'squash' or 'center_crop', got {mode!r}")


def preprocess(
    images: Any,
    pretrained_cfg: Mapping[str, Any],
    *,
    size: int | tuple[int, int] | None = None,
    resize_mode: str = "squash",
    interpolation: str = "bilinear",
) -> np.ndarray:
    """Turn images into a normalised float32 batch (N, H, W, 3).

    images: one image or a sequence of them, each a PIL image or a uint8 array (H, W), (H, W, 1|3|4)
        (alpha is dropped, grey replicated); a uint8 array (N, H, W, 3) is taken as a batch.
    pretrained_cfg: the model's; gives the input size and the mean/std to normalise with.
    size: output size (default: the configuration's input size).
    resize_mode: 'squash' resizes to the size ignoring aspect, as the study's `Resize((224, 224))`;
        'center_crop' is timm's evaluation transform (shorter side to size / crop_pct, centre crop).
    interpolation: 'bilinear' (torchvision's Resize default, the study's) or the configuration's
        ('bicubic' for most timm tags) when reproducing timm's ImageNet evaluation.
    """
    if size is None:
        size = tuple(pretrained_cfg["input_size"][1:])
    elif isinstance(size, int):
        size = (size, size)
    if interpolation not in _RESAMPLE:
        raise ValueError(f"interpolation must be one of {sorted(_RESAMPLE)}, got {interpolation!r}")
    if isinstance(images, np.ndarray) and images.ndim == 4:
        batch = list(images)
    elif isinstance(images, (Image.Image, np.ndarray)):
        batch = [images]
    else:
        batch = list(images)
    if not batch:
        raise ValueError("preprocess needs at least one image")
    crop_pct = float(pretrained_cfg.get("crop_pct", 0.875))
    resized = [
        np.asarray(_resize(_to_pil(im), size, resize_mode, crop_pct, _RESAMPLE[interpolation])) for im in batch
    ]
    x = np.stack(resized).astype(np.float32) / 255.0
    mean = np.asarray(pretrained_cfg["mean"], np.float32)
    std = np.asarray(pretrained_cfg["std"], np.float32)
    return (x - mean) / std
