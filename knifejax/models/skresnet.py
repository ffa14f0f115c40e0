"""SKResNet-18/34 as timm (`timm.models.sknet`): timm's ResNet with `SelectiveKernelBasic` blocks.

A block's first convolution is a Selective Kernel convolution (`layer<i>.<j>.conv1`): the input is split in
halves along the channels, one half per path (`paths.0`, `paths.1`: 3x3 convolutions with dilation 1 and 2,
timm's "3x3 and 5x5" with the 5x5 kept 3x3 and dilated), each conv + BN + ReLU; the attention (`attn`) pools
the paths' sum to one vector, reduces it (`fc_reduce`, BN, ReLU), expands it to one logit per channel and
path (`fc_select`) and takes a softmax over the paths, whose weights mix the paths channel by channel. The
second convolution (`conv2.conv`, `conv2.bn`) has no activation; the residual sum is followed by ReLU.

Stem, stages, downsampling, stochastic depth and head are `knifejax.models.resnet.ResNet`'s, so parameter
paths are timm's state-dict keys (`layer1.0.conv1.attn.fc_reduce.weight`) and `stages()` is ResNet's.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from knifejax.models import init
from knifejax.models.layers import BatchNorm2d, Conv2d, DropPath, make_divisible
from knifejax.models.registry import register_model
from knifejax.models.resnet import ResNet, downsample_conv, shortcut


class ConvNormAct(nnx.Module):
    """timm's ConvNormAct: conv (no bias, timm padding) then BatchNorm with an optional activation."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int,
        *,
        stride: int = 1,
        dilation: int = 1,
        act: str = "relu",
        rngs: nnx.Rngs,
    ):
        self.conv = Conv2d(in_chs, out_chs, kernel_size, stride=stride, dilation=dilation, rngs=rngs)
        self.bn = BatchNorm2d(out_chs, act=act)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.bn(self.conv(x))


class SelectiveKernelAttn(nnx.Module):
    """timm's SelectiveKernelAttn: (B, paths, H, W, C) -> per-channel path weights (B, paths, 1, 1, C) that
    sum to one over the paths."""

    def __init__(self, channels: int, num_paths: int, attn_channels: int, *, rngs: nnx.Rngs):
        self.num_paths = num_paths
        self.fc_reduce = Conv2d(channels, attn_channels, 1, rngs=rngs)
        self.bn = BatchNorm2d(attn_channels, act="relu")
        self.fc_select = Conv2d(attn_channels, channels * num_paths, 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, p, _, _, c = x.shape
        if p != self.num_paths:
            raise ValueError(f"expected {self.num_paths} paths, got {p}")
        s = jnp.mean(jnp.sum(x, axis=1), axis=(1, 2), keepdims=True)  # (B, 1, 1, C)
        s = self.fc_select(self.bn(self.fc_reduce(s)))  # (B, 1, 1, paths * C), path-major as timm's view
        s = jnp.moveaxis(s.reshape(b, 1, 1, p, c), 3, 1)  # (B, paths, 1, 1, C)
        return jax.nn.softmax(s, axis=1)


class SelectiveKernel(nnx.Module):
    """timm's SelectiveKernel convolution (defaults as timm's: kernels [3, 5], 3x3 kept by dilating, input
    split across the paths, attention width `make_divisible(out_chs * rd_ratio, rd_divisor)`)."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        *,
        kernel_size: Sequence[int] = (3, 5),
        stride: int = 1,
        dilation: int = 1,
        rd_ratio: float = 1.0 / 16,
        rd_channels: int | None = None,
        rd_divisor: int = 8,
        keep_3x3: bool = True,
        split_input: bool = True,
        rngs: nnx.Rngs,
    ):
        kernel_size = list(kernel_size)
        if any(k < 3 or k % 2 == 0 for k in kernel_size):
            raise ValueError(f"kernel sizes must be odd and >= 3, got {kernel_size}")
        if keep_3x3:
            dilations = [dilation * (k - 1) // 2 for k in kernel_size]
            kernel_size = [3] * len(kernel_size)
        else:
            dilations = [dilation] * len(kernel_size)
        self.num_paths = len(kernel_size)
        self.split_input = split_input
        if split_input:
            if in_chs % self.num_paths:
                raise ValueError(f"in_chs={in_chs} does not split into {self.num_paths} paths")
            path_in = in_chs // self.num_paths
        else:
            path_in = in_chs
        self.paths = nnx.List([
            ConvNormAct(path_in, out_chs, k, stride=stride, dilation=d, rngs=rngs)
            for k, d in zip(kernel_size, dilations)
        ])
        attn_channels = rd_channels or make_divisible(out_chs * rd_ratio, divisor=rd_divisor)
        self.attn = SelectiveKernelAttn(out_chs, self.num_paths, attn_channels, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        inputs = jnp.split(x, self.num_paths, axis=-1) if self.split_input else [x] * self.num_paths
        paths = jnp.stack([path(xi) for path, xi in zip(self.paths, inputs)], axis=1)  # (B, paths, H, W, C)
        return jnp.sum(paths * self.attn(paths), axis=1)


class SelectiveKernelBasic(nnx.Module):
    """timm's SelectiveKernelBasic: SK conv (stride here), 3x3 ConvNormAct without act, drop path, residual,
    ReLU."""

    expansion = 1

    def __init__(
        self,
        in_chs: int,
        planes: int,
        stride: int,
        drop_path_rate: float,
        *,
        sk_kwargs: dict | None = None,
        rngs: nnx.Rngs,
    ):
        self.conv1 = SelectiveKernel(in_chs, planes, stride=stride, **(sk_kwargs or {}), rngs=rngs)
        self.conv2 = ConvNormAct(planes, planes, 3, act="identity", rngs=rngs)
        self.downsample = downsample_conv(in_chs, planes, stride, rngs)
        self.drop_path = DropPath(drop_path_rate, rngs=rngs) if drop_path_rate else None

    def zero_init_last(self) -> None:
        self.conv2.bn.weight[...] = init.constant(self.conv2.bn.weight.shape, 0.0)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.conv2(self.conv1(x))
        if self.drop_path is not None:
            y = self.drop_path(y)
        return jax.nn.relu(y + shortcut(x, self.downsample))


# timm's skresnet18/34: attention width out/8 rounded to 16, input split; last BN not zero-initialised.
_SK_BASIC_ARGS = dict(
    block_args=dict(sk_kwargs=dict(rd_ratio=1 / 8, rd_divisor=16, split_input=True)), zero_init_last=False
)


@register_model
def skresnet18(**kwargs) -> ResNet:
    return ResNet(**{"block": SelectiveKernelBasic, "layers": (2, 2, 2, 2), **_SK_BASIC_ARGS, **kwargs})


@register_model
def skresnet34(**kwargs) -> ResNet:
    return ResNet(**{"block": SelectiveKernelBasic, "layers": (3, 4, 6, 3), **_SK_BASIC_ARGS, **kwargs})
