"""The study's train augmentation as a jit on the device, pixel for pixel what `knifejax.data.transforms` gives.

Every random choice is still drawn on the host by `transforms.draw_params` from the generator of
(seed, epoch, index), so both placements make the very same draws; `draw_arrays` turns a batch's draws into
per-sample arrays and `augment_batch` applies them to a uint8 batch under jit + vmap:

- brightness: PIL's `Image.blend` with black, trunc(x * float32 factor) clipped to 255;
- rotation: PIL's `Image.rotate(angle, NEAREST, expand=False)` with black fill, i.e. its inverse map rounded to
  16.16 fixed point (`pil_rotation`), computed on the host in float64 as PIL does;
- vertical and horizontal flips.

Contrast, saturation and hue jitter are not implemented here (`unsupported` names them); a configuration that
asks for them augments on the host.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from knifejax.data.transforms import Augment, draw_params, rng_for

HOST_ONLY_JITTER = ("contrast", "saturation", "hue")


def unsupported(cfg: Augment) -> list[str]:
    """The jitter settings of `cfg` that only the host's augmentation implements."""
    return [name for name in HOST_ONLY_JITTER if getattr(cfg, name) > 0]


def pil_rotation(angle: float, width: int, height: int) -> list[int]:
    """The inverse map PIL's `Image.rotate(angle, NEAREST, expand=False)` samples with, as its C code
    (Geometry.c, `affine_fixed`) holds it: `Image.rotate`'s matrix, offset to pixel centres and rounded to
    16.16 fixed point, so that source (x, y) = ((a2 + a0*x + a1*y) >> 16, (a5 + a3*x + a4*y) >> 16).
    Returns [a0, a1, a2, a3, a4, a5]; computed on the host in float64 as PIL does, it gives PIL's pixels."""
    theta = -math.radians(angle)
    a, b = round(math.cos(theta), 15), round(math.sin(theta), 15)
    d, e = round(-math.sin(theta), 15), round(math.cos(theta), 15)
    cx, cy = width / 2, height / 2
    c, f = a * -cx + b * -cy + cx, d * -cx + e * -cy + cy

    def fix(v: float) -> int:
        return math.floor(v * 65536.0 + 0.5)

    return [fix(a), fix(b), fix(c + a * 0.5 + b * 0.5), fix(d), fix(e), fix(f + d * 0.5 + e * 0.5)]


def augment_one(image: jax.Array, brightness: jax.Array, rotation: jax.Array, vflip: jax.Array, hflip: jax.Array):
    """One uint8 (H, W, 3) image through PIL's ops, as one gather and one multiply.

    Each output pixel is traced back through the flips (applied last in PIL), then through the rotation's
    fixed-point inverse map (`pil_rotation`) to its source pixel; sources outside the image give black.
    Brightness is applied after the gather: black stays black, so the order is free.
    """
    h, w, _ = image.shape
    y, x = jnp.mgrid[0:h, 0:w]
    y = jnp.where(vflip, h - 1 - y, y)
    x = jnp.where(hflip, w - 1 - x, x)
    a0, a1, a2, a3, a4, a5 = rotation
    sx = (a2 + a0 * x + a1 * y) >> 16
    sy = (a5 + a3 * x + a4 * y) >> 16
    inside = (sx >= 0) & (sx < w) & (sy >= 0) & (sy < h)
    pixels = image.reshape(h * w, 3)[jnp.where(inside, sy * w + sx, 0)]
    pixels = jnp.where(inside[..., None], pixels, 0)
    return jnp.minimum(jnp.floor(pixels.astype(jnp.float32) * brightness), 255).astype(jnp.uint8)


@jax.jit
def augment_batch(images: jax.Array, params: dict[str, jax.Array]) -> jax.Array:
    """`augment_one` over a uint8 batch (B, H, W, 3), with the per-sample `params` arrays of `draw_arrays`."""
    per_sample = (params["brightness"], params["rotation"], params["vflip"], params["hflip"])
    return jax.vmap(augment_one)(images, *per_sample)


def draw_arrays(cfg: Augment, seed: int, epoch: int, items: np.ndarray) -> dict[str, np.ndarray]:
    """The draws `transforms.augment(..., seed, epoch, index)` makes for each dataset index of `items`, as
    per-sample arrays: brightness factor (1 without brightness jitter) and flips (B,), the rotation as
    `pil_rotation`'s int32 coefficients (B, 6)."""
    if unsupported(cfg):
        raise ValueError(f"the device augmentation does not implement {', '.join(unsupported(cfg))} jitter")
    draws = [draw_params(rng_for(seed, epoch, int(index)), cfg) for index in items]
    return {
        "brightness": np.array([dict(d.jitter).get("brightness", 1.0) for d in draws], np.float32),
        "rotation": np.array([pil_rotation(d.angle, cfg.size, cfg.size) for d in draws], np.int32).reshape(-1, 6),
        "vflip": np.array([d.vflip for d in draws], bool),
        "hflip": np.array([d.hflip for d in draws], bool),
    }
