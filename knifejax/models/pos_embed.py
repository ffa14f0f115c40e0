"""Resampling ViT position embeddings and patch-embedding kernels as timm does when it loads a checkpoint.

timm resizes with `F.interpolate(mode="bicubic", antialias=True, align_corners=False)`, PyTorch's port of
Pillow's resampling: a separable filter, the cubic convolution kernel with a = -0.5 (not the -0.75 of
PyTorch's plain bicubic), evaluated at output pixel centres `scale * (i + 0.5)`, widened by `scale` when
downsampling (the antialiasing), with taps outside the grid dropped and the remaining weights renormalised at
the borders. `jax.image.resize(method="cubic", antialias=True)` is that same filter (Keys' kernel with
a = -0.5, the same centres, widening and renormalisation), so it does the resizing here, in float64 (these
run once, at load time); results are returned in the input's dtype, as timm's.

Measured against PyTorch 2.13 (CPU) in tests/parity/test_vit.py: within ~1e-6 (torch's float32 rounding) up,
down, non-square. One torch quirk is not reproduced: for an output width of 1 (and height > 1) its CPU
antialiased kernels give every output row the first row's value (bilinear too), which is a torch bug rather
than the resampling timm means; such grids only arise for images narrower than two patches.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def _resize_float64(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    with jax.enable_x64(True):
        resized = jax.image.resize(jnp.asarray(x, jnp.float64), shape, method="cubic", antialias=True)
        return np.asarray(resized)


def resize_weights(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) matrix of the antialiased bicubic resize along one axis (the identity, resized)."""
    return _resize_float64(np.eye(in_size), (out_size, in_size))


def resize_bicubic_aa(grid: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a (H, W, C) grid to (size[0], size[1], C) as torch's antialiased bicubic `F.interpolate`; float64."""
    return _resize_float64(grid, (size[0], size[1], grid.shape[2]))


def resample_abs_pos_embed(
    posemb: np.ndarray,
    new_size: tuple[int, int],
    old_size: tuple[int, int] | None = None,
    num_prefix_tokens: int = 1,
) -> np.ndarray:
    """timm's `resample_abs_pos_embed`: (1, prefix + h*w, D) -> (1, prefix + H*W, D); the prefix (class)
    tokens are kept, the grid resized. Without `old_size` the grid is taken to be square."""
    num_pos = posemb.shape[1] - num_prefix_tokens
    if old_size is None:
        side = math.isqrt(num_pos)
        if side * side != num_pos:
            raise ValueError(f"{num_pos} position tokens are not a square grid; give old_size")
        old_size = (side, side)
    if tuple(old_size) == tuple(new_size):
        return posemb
    prefix, grid = posemb[:, :num_prefix_tokens], posemb[0, num_prefix_tokens:]
    grid = resize_bicubic_aa(grid.reshape(*old_size, -1), new_size)
    grid = grid.reshape(1, new_size[0] * new_size[1], -1).astype(posemb.dtype)
    return np.concatenate([prefix, grid], axis=1)


def resample_patch_embed(weight: np.ndarray, new_size: tuple[int, int]) -> np.ndarray:
    """timm's `resample_patch_embed` (FlexiViT): a (O, I, h, w) patch kernel resampled to (O, I, H, W) with the
    pseudo-inverse of the resize, so that a patch resized with it gives the same embedding."""
    old_size = tuple(weight.shape[-2:])
    if old_size == tuple(new_size):
        return weight
    resize = np.kron(resize_weights(old_size[0], new_size[0]), resize_weights(old_size[1], new_size[1]))
    flat = np.asarray(weight, np.float64).reshape(*weight.shape[:2], -1)
    out = flat @ np.linalg.pinv(resize)
    return out.reshape(*weight.shape[:2], *new_size).astype(weight.dtype)
