"""Resampling ViT position embeddings and patch-embedding kernels as timm does when it loads a checkpoint.

timm resizes with `F.interpolate(mode="bicubic", antialias=True, align_corners=False)`, PyTorch's port of
Pillow's resampling: a separable filter, the cubic convolution kernel with a = -0.5 (not the -0.75 of
PyTorch's plain bicubic, nor `jax.image.resize`'s Keys kernel), evaluated at output pixel centres
`scale * (i + 0.5)`. When downsampling the kernel is widened by `scale` (the antialiasing); at the borders
taps outside the grid are dropped and the remaining weights renormalised (no edge clamping). These run at
load time, in float64 numpy; results are returned in the input's dtype, as timm's.

Measured against PyTorch 2.13 (CPU) in tests/parity/test_vit.py: within ~1e-6 (torch's float32 rounding) up,
down, non-square. One torch quirk is not reproduced: for an output width of 1 (and height > 1) its CPU
antialiased kernels give every output row the first row's value (bilinear too), which is a torch bug rather
than the resampling timm means; such grids only arise for images narrower than two patches.
"""

from __future__ import annotations

import math

import numpy as np

CUBIC_A = -0.5  # Pillow's and torch's antialiased bicubic; measured against torch in tests/parity/test_vit.py


def _cubic(x: np.ndarray, a: float = CUBIC_A) -> np.ndarray:
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def resize_weights(in_size: int, out_size: int, a: float = CUBIC_A) -> np.ndarray:
    """(out_size, in_size) matrix of torch's antialiased bicubic along one axis (align_corners=False)."""
    scale = in_size / out_size
    support = 2.0 * scale if scale >= 1.0 else 2.0
    inv_scale = 1.0 / scale if scale >= 1.0 else 1.0
    weights = np.zeros((out_size, in_size))
    for i in range(out_size):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        taps = _cubic((np.arange(lo, hi) - center + 0.5) * inv_scale, a)
        total = taps.sum()
        weights[i, lo:hi] = taps / total if total != 0.0 else taps
    return weights


def resize_bicubic_aa(grid: np.ndarray, size: tuple[int, int], a: float = CUBIC_A) -> np.ndarray:
    """Resize a (H, W, C) grid to (size[0], size[1], C) as torch's antialiased bicubic `F.interpolate`."""
    rows = resize_weights(grid.shape[0], size[0], a)
    cols = resize_weights(grid.shape[1], size[1], a)
    return np.einsum("oh,hwc,pw->opc", rows, np.asarray(grid, np.float64), cols)


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
