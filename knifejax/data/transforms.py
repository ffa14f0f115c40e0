"""The study's train augmentations, each a pure function of (seed, epoch, index) so runs repeat exactly.

The study's torchvision pipeline was `Resize((224, 224))`, `ColorJitter(brightness=0.2)` (contrast,
saturation and hue variants too), `RandomRotation(degrees=(0, 180))` — a one-sided range —,
`RandomVerticalFlip(0.5)`, `RandomHorizontalFlip(0.5)`, then `ToTensor` and `Normalize`. Here every random
choice is drawn first (`draw_params`) from a generator seeded by (seed, epoch, index), then applied with the
same PIL operations torchvision's PIL backend uses, so a given draw gives torchvision's pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageEnhance


@dataclass(frozen=True)
class Augment:
    """Augmentation settings; the defaults are the study's (224 px, brightness 0.2, rotation 0-180°, flips)."""

    size: int = 224
    brightness: float = 0.2
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    rotation: tuple[float, float] = (0.0, 180.0)
    hflip: float = 0.5
    vflip: float = 0.5

    def __post_init__(self):
        if not 0 <= self.hue <= 0.5:
            raise ValueError(f"hue jitter must be in [0, 0.5] as in torchvision, got {self.hue}")
        for name in ("brightness", "contrast", "saturation"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} jitter must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class AugmentParams:
    """One draw: jitter factors in the order they are applied, rotation angle, flips."""

    jitter: tuple[tuple[str, float], ...]
    angle: float
    vflip: bool
    hflip: bool


def rng_for(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one sample's augmentation: independent of worker count and iteration order."""
    return np.random.default_rng([seed, epoch, index])


def draw_params(rng: np.random.Generator, cfg: Augment) -> AugmentParams:
    """Draw as torchvision does: jitter factors uniform in [1-j, 1+j] (hue in [-h, h]) applied in a random
    order, the angle uniform in the rotation range, each flip with its probability."""
    ranges = {
        "brightness": (max(0.0, 1 - cfg.brightness), 1 + cfg.brightness),
        "contrast": (max(0.0, 1 - cfg.contrast), 1 + cfg.contrast),
        "saturation": (max(0.0, 1 - cfg.saturation), 1 + cfg.saturation),
        "hue": (-cfg.hue, cfg.hue),
    }
    active = [name for name in ranges if getattr(cfg, name) > 0]
    order = [active[i] for i in rng.permutation(len(active))]
    jitter = tuple((name, float(rng.uniform(*ranges[name]))) for name in order)
    angle = float(rng.uniform(*cfg.rotation))
    vflip = bool(rng.random() < cfg.vflip)
    hflip = bool(rng.random() < cfg.hflip)
    return AugmentParams(jitter, angle, vflip, hflip)


def adjust_hue(image: Image.Image, factor: float) -> Image.Image:
    """torchvision's PIL `adjust_hue`: shift the H channel of HSV by `factor` of a turn (uint8 wrap-around)."""
    h, s, v = image.convert("HSV").split()
    shifted = (np.asarray(h, np.uint8).astype(np.int16) + int(factor * 255)) % 256  # np.int8 truncation
    h = Image.fromarray(shifted.astype(np.uint8), "L")
    return Image.merge("HSV", (h, s, v)).convert("RGB")


_JITTER = {
    "brightness": lambda im, f: ImageEnhance.Brightness(im).enhance(f),
    "contrast": lambda im, f: ImageEnhance.Contrast(im).enhance(f),
    "saturation": lambda im, f: ImageEnhance.Color(im).enhance(f),
    "hue": adjust_hue,
}


def apply(image: Image.Image, params: AugmentParams, size: int) -> np.ndarray:
    """Apply one draw to an RGB PIL image: resize, jitter, rotate, flips. Returns uint8 (size, size, 3)."""
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    for name, factor in params.jitter:
        image = _JITTER[name](image, factor)
    # torchvision RandomRotation: counter-clockwise degrees, nearest, no expansion, black fill.
    image = image.rotate(params.angle, resample=Image.Resampling.NEAREST, expand=False, fillcolor=(0, 0, 0))
    out = np.asarray(image)
    if params.vflip:
        out = out[::-1]
    if params.hflip:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


def augment(image: np.ndarray, cfg: Augment, seed: int, epoch: int, index: int) -> np.ndarray:
    """The study's train transform of one uint8 RGB image, deterministic in (seed, epoch, index)."""
    params = draw_params(rng_for(seed, epoch, index), cfg)
    return apply(Image.fromarray(image), params, cfg.size)
