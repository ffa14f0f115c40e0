"""Convolution as one matrix product over gathered patches (im2col): on CPU, for 1×1 kernels and for feature
maps of a few pixels.

- 1×1 kernels (the expansion and projection of every MBConv block, ResNet's downsample shortcuts): XLA:CPU's
  convolution is 2-7× slower than the same work as a matrix product in the forward pass and 3-5× with its
  gradients; its kernel gradient transposes both operands (batch 32, EfficientNet-B0's shapes,
  docs/performance.md). A 1×1 patch is the (strided) input itself, so the product is all there is.
- Tiny maps: a 3×3 convolution (padding 1) of a 2×2 map with 512 channels, batch 16, takes 250-280 ms
  forward — 20× a 4×4 map's time, for a quarter of the work (1.1 GFLOP/s against 80-90) — and its gradient
  530 ms. ResNet-18 and SKResNet-18 at 64 px end on 2×2 maps.

Gathering the k² shifted, strided slices of the padded input and multiplying by the kernel reshaped to
(k²·C_in, C_out) is exact (the same products and sums, in another order); its autodiff (slices, a
concatenation, a product) is as cheap. Patches that tile the input (stride = kernel: a ViT's patch embedding on a
grid of a few patches) are the input cut into blocks, a reshape: as k² slices, a 32×32 patch made 1,024 of them,
and XLA took 10-17 s to compile ViT-S/32's forward at 70×41 px, 0.8 s at 384 px. For larger maps and kernels
XLA's convolution wins (the patches are k² copies of the input), so `Conv2d` uses this form only in these two
cases, and only on CPU.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array

from knifejax.ops.windows import explicit_pads

MAX_OUTPUT_PIXELS = 4


def conv_output_hw(in_hw: tuple[int, int], kernel: int, stride: int, dilation: int, padding) -> tuple[int, int]:
    span = dilation * (kernel - 1) + 1
    pads = explicit_pads(padding, in_hw, (span, span), stride)
    return tuple((size + lo + hi - span) // stride + 1 for size, (lo, hi) in zip(in_hw, pads))


def patches_conv(x: Array, kernel: Array, stride: int, dilation: int, padding) -> Array:
    """NHWC `x` convolved with the HWIO `kernel` (one group) as `lax.conv_general_dilated` would."""
    k, _, c_in, c_out = kernel.shape
    span = dilation * (k - 1) + 1
    (top, bottom), (left, right) = explicit_pads(padding, x.shape[1:3], (span, span), stride)
    xp = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    ho = (xp.shape[1] - span) // stride + 1
    wo = (xp.shape[2] - span) // stride + 1
    if stride == span:  # patches side by side (a ViT's patch embedding): the input cut into blocks, not k² slices
        blocks = xp[:, : ho * k, : wo * k, :].reshape(xp.shape[0], ho, k, wo, k, c_in)
        patches = blocks.transpose(0, 1, 3, 2, 4, 5).reshape(xp.shape[0], ho, wo, k * k * c_in)
    else:
        columns = [
            xp[:, i * dilation : i * dilation + stride * (ho - 1) + 1 : stride,
               j * dilation : j * dilation + stride * (wo - 1) + 1 : stride, :]
            for i in range(k)
            for j in range(k)
        ]  # fmt: skip
        patches = jnp.concatenate(columns, axis=-1)
    # patches: (N, ho, wo, k·k·C_in), ordered as the HWIO kernel's rows
    return patches @ kernel.reshape(k * k * c_in, c_out)
