"""Window helpers shared by the slice-based kernels (depthwise convolution, max pooling, 1×1-output
convolution): explicit padding, and the k² strided slices of a padded input that a window operation reads."""

from __future__ import annotations

import jax
from jax import lax

Pads = tuple[tuple[int, int], tuple[int, int]]  # ((top, bottom), (left, right))


def window_taps(xp: jax.Array, k_h: int, k_w: int, stride: int):
    """Yield (a, b, slice) for every kernel tap, row-major: the input positions tap (a, b) meets, one per pixel
    of the output (a window at each stride step of the padded input `xp`)."""
    n, height, width, c = xp.shape
    out_h, out_w = (height - k_h) // stride + 1, (width - k_w) // stride + 1
    for a in range(k_h):
        for b in range(k_w):
            end = (n, a + (out_h - 1) * stride + 1, b + (out_w - 1) * stride + 1, c)
            yield a, b, lax.slice(xp, (0, a, b, 0), end, (1, stride, stride, 1))


def explicit_pads(padding, in_hw: tuple[int, int], kernel: tuple[int, int], stride: int) -> Pads:
    """Conv2d's padding ('SAME' or explicit pairs) as explicit ((top, bottom), (left, right)) pads."""
    if padding == "SAME":
        return tuple(lax.padtype_to_pads(in_hw, kernel, (stride, stride), "SAME"))
    return tuple(tuple(p) for p in padding)
