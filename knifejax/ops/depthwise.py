"""Depthwise convolution as sums of shifted slices, forward and backward (`jax.custom_vjp`).

XLA:CPU runs a `feature_group_count = C` convolution 4–50× slower than PyTorch, layer by layer, in the forward
pass and both gradients. Written as k² strided slices of the padded input times per-channel weights, the
forward is one elementwise fusion. Autodiff of that form is slow again (interior-padded pads and adds), so the
backward is written the same way:

- input gradient: the output gradient, dilated by the stride (zeros between rows/columns) and padded by k - 1,
  summed over the k² shifts times the flipped kernel — a full correlation — then cropped to the unpadded input;
- kernel gradient: for each of the k² taps, the sum over batch and positions of the tap's input slice times the
  output gradient, all k² sums in one pass over a cache-sized chunk at a time.

Same results as `lax.conv_general_dilated` up to float rounding (tests/test_depthwise.py).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from knifejax.ops.windows import Pads, window_taps

# Padded input per kernel-gradient chunk: half the per-core L2 cache (2 MiB) of the CPU the chunking was measured on.
CHUNK_BYTES = 1 << 20


def _pad(x: jax.Array, pads: Pads) -> jax.Array:
    return jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))


def _forward(x: jax.Array, w: jax.Array, stride: int, pads: Pads) -> jax.Array:
    xp = _pad(x, pads)
    k_h, k_w = w.shape[:2]
    out = None
    for a, b, tap in window_taps(xp, k_h, k_w, stride):
        term = tap * w[a, b]
        out = term if out is None else out + term
    return out


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def depthwise_conv(x: jax.Array, w: jax.Array, stride: int, pads: Pads) -> jax.Array:
    """x (N, H, W, C), w (kh, kw, C), explicit pads ((top, bottom), (left, right)) -> (N, H', W', C)."""
    return _forward(x, w, stride, pads)


def _fwd(x, w, stride, pads):
    return _forward(x, w, stride, pads), (x, w)


def _largest_divisor(n: int, fits) -> int:
    return max((d for d in range(1, n + 1) if n % d == 0 and fits(d)), default=1)


def _kernel_gradient(xp: jax.Array, g: jax.Array, k_h: int, k_w: int, stride: int) -> jax.Array:
    """(k_h·k_w, C): per tap, the sum over batch and positions of its input slice times the output gradient.

    The k² sums are one variadic reduction (`lax.reduce` with k² operands): one pass over a chunk of the input
    and output gradient, one compiled kernel per layer. Over a chunk that fits in cache — at most `CHUNK_BYTES` of
    padded input: whole images, or bands of rows of one image — the pass is 1.3-3× faster than k² separate
    reductions per chunk of two images; over a larger one it is up to 2.6× slower (EfficientNet-B0's and
    MobileNetV3's layers at batch 32, docs/performance.md). A loop over the chunks sums them."""
    n, _, width, channels = xp.shape
    out_h = g.shape[1]
    acc_dtype = jnp.promote_types(g.dtype, jnp.float32)
    row_bytes = width * channels * xp.dtype.itemsize

    def input_rows(rows: int) -> int:
        return (rows - 1) * stride + k_h

    band = _largest_divisor(out_h, lambda rows: input_rows(rows) * row_bytes <= CHUNK_BYTES)
    images = 1 if band < out_h else _largest_divisor(n, lambda d: d * input_rows(out_h) * row_bytes <= CHUNK_BYTES)
    bands = out_h // band

    def add_chunk(i, total):
        image, row = (i // bands) * images, (i % bands) * band
        x_chunk = lax.dynamic_slice(xp, (image, row * stride, 0, 0), (images, input_rows(band), width, channels))
        g_chunk = lax.dynamic_slice(g, (image, row, 0, 0), (images, band, *g.shape[2:]))
        products = tuple((tap * g_chunk).astype(acc_dtype) for _, _, tap in window_taps(x_chunk, k_h, k_w, stride))
        zeros = (jnp.zeros((), acc_dtype),) * len(products)
        sums = lax.reduce(products, zeros, lambda a, b: tuple(p + q for p, q in zip(a, b)), (0, 1, 2))
        return total + jnp.stack(sums)

    return lax.fori_loop(0, n // images * bands, add_chunk, jnp.zeros((k_h * k_w, channels), acc_dtype))


def _bwd(stride, pads, residuals, g):
    x, w = residuals
    xp = _pad(x, pads)
    k_h, k_w = w.shape[:2]
    out_h, out_w = g.shape[1:3]

    grad_w = _kernel_gradient(xp, g, k_h, k_w, stride).reshape(w.shape).astype(w.dtype)

    # Output gradient placed on the padded input's grid of window starts, then padded for a full correlation.
    extra_h = (xp.shape[1] - k_h + 1) - ((out_h - 1) * stride + 1)
    extra_w = (xp.shape[2] - k_w + 1) - ((out_w - 1) * stride + 1)
    zero = jnp.zeros((), g.dtype)
    gp = lax.pad(
        g, zero, ((0, 0, 0), (k_h - 1, k_h - 1 + extra_h, stride - 1), (k_w - 1, k_w - 1 + extra_w, stride - 1), (0, 0, 0))
    )
    grad_xp = None
    for a in range(k_h):
        for b in range(k_w):
            shifted = lax.slice(gp, (0, k_h - 1 - a, k_w - 1 - b, 0),
                                (gp.shape[0], k_h - 1 - a + xp.shape[1], k_w - 1 - b + xp.shape[2], gp.shape[3]))  # fmt: skip
            term = shifted * w[a, b]
            grad_xp = term if grad_xp is None else grad_xp + term
    (top, _), (left, _) = pads
    grad_x = grad_xp[:, top : top + x.shape[1], left : left + x.shape[2]]
    return grad_x, grad_w


depthwise_conv.defvjp(_fwd, _bwd)
