"""ResNet-18/34/50 as timm (torchvision layout): attribute paths `conv1`, `bn1`, `layer<1-4>.<i>.conv1`,
`layer<i>.<j>.downsample.0/1`, `fc`. Convolutions use PyTorch's symmetric padding — flax's 'SAME'
differs for strided layers and would not reproduce torchvision/timm weights.

`ResNet` takes the block class (and `block_args` for it) as timm's does, so families that are timm's ResNet
with another block (SKResNet, `knifejax.models.skresnet`) reuse the stem, stages and head.
"""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx

from knifejax.models import init
from knifejax.models.layers import (
    POOL_TYPES,
    BatchNorm2d,
    Conv2d,
    DropPath,
    Linear,
    head_forward,
    max_pool2d,
    pool_feat_mult,
)
from knifejax.models.registry import register_model


def downsample_conv(in_chs: int, out_chs: int, stride: int, rngs: nnx.Rngs) -> nnx.List | None:
    """timm's `downsample_conv`: 1x1 strided conv + BN when the shortcut changes shape, else None."""
    if stride == 1 and in_chs == out_chs:
        return None
    return nnx.List([Conv2d(in_chs, out_chs, 1, stride=stride, rngs=rngs), BatchNorm2d(out_chs)])


def shortcut(x: jax.Array, downsample: nnx.List | None) -> jax.Array:
    """A residual block's identity path: `x`, through `downsample` (from `downsample_conv`) when there is one."""
    if downsample is None:
        return x
    conv, bn = downsample
    return bn(conv(x))


class BasicBlock(nnx.Module):
    expansion = 1

    def __init__(self, in_chs: int, planes: int, stride: int, drop_path_rate: float, *, rngs: nnx.Rngs):
        self.conv1 = Conv2d(in_chs, planes, 3, stride=stride, rngs=rngs)
        self.bn1 = BatchNorm2d(planes, act="relu")
        self.conv2 = Conv2d(planes, planes, 3, rngs=rngs)
        self.bn2 = BatchNorm2d(planes)
        self.downsample = downsample_conv(in_chs, planes, stride, rngs)
        self.drop_path = DropPath(drop_path_rate, rngs=rngs) if drop_path_rate else None

    def zero_init_last(self) -> None:
        self.bn2.weight[...] = init.constant(self.bn2.weight.shape, 0.0)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.bn2(self.conv2(self.bn1(self.conv1(x))))
        if self.drop_path is not None:
            y = self.drop_path(y)
        return jax.nn.relu(y + shortcut(x, self.downsample))


class Bottleneck(nnx.Module):
    expansion = 4

    def __init__(self, in_chs: int, planes: int, stride: int, drop_path_rate: float, *, rngs: nnx.Rngs):
        out_chs = planes * self.expansion
        self.conv1 = Conv2d(in_chs, planes, 1, rngs=rngs)
        self.bn1 = BatchNorm2d(planes, act="relu")
        self.conv2 = Conv2d(planes, planes, 3, stride=stride, rngs=rngs)
        self.bn2 = BatchNorm2d(planes, act="relu")
        self.conv3 = Conv2d(planes, out_chs, 1, rngs=rngs)
        self.bn3 = BatchNorm2d(out_chs)
        self.downsample = downsample_conv(in_chs, out_chs, stride, rngs)
        self.drop_path = DropPath(drop_path_rate, rngs=rngs) if drop_path_rate else None

    def zero_init_last(self) -> None:
        self.bn3.weight[...] = init.constant(self.bn3.weight.shape, 0.0)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.bn2(self.conv2(self.bn1(self.conv1(x))))
        y = self.bn3(self.conv3(y))
        if self.drop_path is not None:
            y = self.drop_path(y)
        return jax.nn.relu(y + shortcut(x, self.downsample))


class ResNet(nnx.Module):
    grad_cam_layer = "layer4"  # the last stage's output (pytorch-grad-cam's `layer4[-1]`; see knifejax.explain)

    def __init__(
        self,
        block: type[nnx.Module],
        layers: tuple[int, int, int, int],
        *,
        num_classes: int,
        pretrained_cfg: dict[str, Any],
        in_chans: int = 3,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
        zero_init_last: bool = True,
        block_args: dict[str, Any] | None = None,
        rngs: nnx.Rngs,
    ):
        """block: a class taking `(in_chs, planes, stride, drop_path_rate, *, rngs, **block_args)` with an
        `expansion` attribute and a `zero_init_last()` method (BasicBlock, Bottleneck, SelectiveKernelBasic).
        layers: the number of blocks in each of the four stages; the registered variants let the `block` and
        `layers` keywords override theirs, as timm's do (`resnet50(layers=(1, 2, 1, 1))`)."""
        if len(layers) != 4 or not all(isinstance(n, int) and n >= 1 for n in layers):
            raise ValueError(f"layers must be four block counts of at least 1, one per stage, got {layers!r}")
        if global_pool not in POOL_TYPES:
            raise ValueError(f"global_pool must be one of {POOL_TYPES}, got {global_pool!r}")
        self.pretrained_cfg = pretrained_cfg
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.conv1 = Conv2d(in_chans, 64, 7, stride=2, padding=3, rngs=rngs)
        self.bn1 = BatchNorm2d(64, act="relu")
        in_chs = 64
        total = sum(layers)
        index = 0
        for i, (depth, planes) in enumerate(zip(layers, (64, 128, 256, 512))):
            blocks = []
            for j in range(depth):
                stride = 2 if i > 0 and j == 0 else 1
                dpr = drop_path_rate * index / (total - 1)
                blocks.append(block(in_chs, planes, stride, dpr, rngs=rngs, **(block_args or {})))
                in_chs = planes * block.expansion
                index += 1
            setattr(self, f"layer{i + 1}", nnx.List(blocks))
        if zero_init_last:
            for i in range(1, 5):
                for b in getattr(self, f"layer{i}"):
                    b.zero_init_last()
        self.num_features = in_chs  # as timm: before pooling; head_hidden_size: pooled, the pre-logits width
        self.head_hidden_size = in_chs * pool_feat_mult(global_pool)
        self.head_drop = nnx.Dropout(drop_rate, rngs=rngs) if drop_rate > 0 else None
        self.fc = Linear(self.head_hidden_size, num_classes, rngs=rngs) if num_classes > 0 else None

    def stages(self) -> list[tuple[str, ...]]:
        """Module paths of the feature stages, input to output: the stem, then layer1..layer4.
        Freezing "the first N stages" (`knifejax.train.transfer`) counts in this list."""
        return [("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",)]

    def forward_features(self, x: jax.Array) -> jax.Array:
        """(B, H, W, 3) -> layer4's output (B, H/32, W/32, C), as timm's forward_features."""
        x = max_pool2d(self.bn1(self.conv1(x)), 3, 2, 1)
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in layer:
                x = block(x)
        return x

    def forward_head(self, x: jax.Array, pre_logits: bool = False) -> jax.Array:
        return head_forward(x, pool_type=self.global_pool, dropout=self.head_drop, classifier=self.fc, pre_logits=pre_logits)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.forward_head(self.forward_features(x))


@register_model
def resnet18(**kwargs) -> ResNet:
    return ResNet(**{"block": BasicBlock, "layers": (2, 2, 2, 2), **kwargs})


@register_model
def resnet34(**kwargs) -> ResNet:
    return ResNet(**{"block": BasicBlock, "layers": (3, 4, 6, 3), **kwargs})


@register_model
def resnet50(**kwargs) -> ResNet:
    return ResNet(**{"block": Bottleneck, "layers": (3, 4, 6, 3), **kwargs})
