"""EfficientNet B0-B3 (PyTorch-style and `tf_` TensorFlow-ported) and EfficientNet-Lite0-4, as timm.

Attribute paths equal timm's module paths (`conv_stem`, `bn1`, `blocks.<stage>.<index>.conv_dw`, `conv_head`,
`bn2`, `classifier`), so timm state dicts load by rule. `tf_` variants use TensorFlow 'SAME' padding and
BatchNorm eps 1e-3; the others symmetric padding and eps 1e-5.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
from flax import nnx

from knifejax.models.efficientnet_blocks import BlockArgs, BuildConfig, build_blocks, decode_arch_def, round_channels
from knifejax.models.layers import POOL_TYPES, BatchNorm2d, Conv2d, Linear, head_forward, pool_feat_mult
from knifejax.models.registry import register_model

BN_EPS_TF = 1e-3

EFFICIENTNET_ARCH = [
    ["ds_r1_k3_s1_e1_c16_se0.25"],
    ["ir_r2_k3_s2_e6_c24_se0.25"],
    ["ir_r2_k5_s2_e6_c40_se0.25"],
    ["ir_r3_k3_s2_e6_c80_se0.25"],
    ["ir_r3_k5_s1_e6_c112_se0.25"],
    ["ir_r4_k5_s2_e6_c192_se0.25"],
    ["ir_r1_k3_s1_e6_c320_se0.25"],
]

# Lite: no squeeze-excite, ReLU6, stem and head widths fixed, first and last stage depths fixed.
EFFICIENTNET_LITE_ARCH = [[s.replace("_se0.25", "") for s in stage] for stage in EFFICIENTNET_ARCH]


class EfficientNet(nnx.Module):
    grad_cam_layer = "bn2"  # the head activation, the last spatial map (see knifejax.explain)

    def __init__(
        self,
        stages: list[list[BlockArgs]],
        *,
        build: BuildConfig,
        num_classes: int,
        num_features: int,
        stem_size: int,
        pretrained_cfg: dict[str, Any],
        in_chans: int = 3,
        drop_rate: float = 0.0,
        global_pool: str = "avg",
        rngs: nnx.Rngs,
    ):
        if global_pool not in POOL_TYPES:
            raise ValueError(f"global_pool must be one of {POOL_TYPES}, got {global_pool!r}")
        self.pretrained_cfg = pretrained_cfg
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.conv_stem = Conv2d(in_chans, stem_size, 3, stride=2, padding=build.pad_type, rngs=rngs)
        self.bn1 = BatchNorm2d(stem_size, eps=build.bn_eps, act=build.act)
        self.blocks, head_chs = build_blocks(stem_size, stages, build, rngs)
        self.conv_head = Conv2d(head_chs, num_features, 1, padding=build.pad_type, rngs=rngs)
        self.bn2 = BatchNorm2d(num_features, eps=build.bn_eps, act=build.act)
        self.num_features = num_features  # as timm: before pooling; head_hidden_size: pooled, the pre-logits width
        self.head_hidden_size = num_features * pool_feat_mult(global_pool)
        self.head_drop = nnx.Dropout(drop_rate, rngs=rngs) if drop_rate > 0 else None
        self.classifier = Linear(self.head_hidden_size, num_classes, rngs=rngs) if num_classes > 0 else None

    def stages(self) -> list[tuple[str, ...]]:
        """Module paths of the feature stages, input to output: stem, each block stage, the head conv.
        Freezing "the first N stages" (`knifejax.train.transfer`) counts in this list."""
        return [("conv_stem", "bn1"), *((f"blocks.{i}",) for i in range(len(self.blocks))), ("conv_head", "bn2")]

    def forward_features(self, x: jax.Array) -> jax.Array:
        """(B, H, W, 3) -> the head activation (B, H/32, W/32, num_features), as timm's forward_features."""
        x = self.bn1(self.conv_stem(x))
        for stage in self.blocks:
            for block in stage:
                x = block(x)
        return self.bn2(self.conv_head(x))

    def forward_head(self, x: jax.Array, pre_logits: bool = False) -> jax.Array:
        return head_forward(
            x, pool_type=self.global_pool, dropout=self.head_drop, classifier=self.classifier, pre_logits=pre_logits
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.forward_head(self.forward_features(x))


def _efficientnet(
    channel_multiplier: float, depth_multiplier: float, *, tf: bool, drop_path_rate: float = 0.0, **kwargs
) -> EfficientNet:
    round_chs_fn = partial(round_channels, multiplier=channel_multiplier)
    build = BuildConfig(
        pad_type="same" if tf else "",
        act="silu",
        bn_eps=BN_EPS_TF if tf else 1e-5,
        round_chs_fn=round_chs_fn,
        drop_path_rate=drop_path_rate,
    )
    stages = decode_arch_def(EFFICIENTNET_ARCH, depth_multiplier)
    return EfficientNet(stages, build=build, num_features=round_chs_fn(1280), stem_size=round_chs_fn(32), **kwargs)


def _efficientnet_lite(
    channel_multiplier: float, depth_multiplier: float, *, drop_path_rate: float = 0.0, **kwargs
) -> EfficientNet:
    build = BuildConfig(
        pad_type="same",
        act="relu6",
        bn_eps=BN_EPS_TF,
        round_chs_fn=partial(round_channels, multiplier=channel_multiplier),
        drop_path_rate=drop_path_rate,
    )
    stages = decode_arch_def(EFFICIENTNET_LITE_ARCH, depth_multiplier, fix_first_last=True)
    return EfficientNet(stages, build=build, num_features=1280, stem_size=32, **kwargs)


@register_model
def efficientnet_b0(**kwargs) -> EfficientNet:
    return _efficientnet(1.0, 1.0, tf=False, **kwargs)


@register_model
def efficientnet_b1(**kwargs) -> EfficientNet:
    return _efficientnet(1.0, 1.1, tf=False, **kwargs)


@register_model
def efficientnet_b2(**kwargs) -> EfficientNet:
    return _efficientnet(1.1, 1.2, tf=False, **kwargs)


@register_model
def efficientnet_b3(**kwargs) -> EfficientNet:
    return _efficientnet(1.2, 1.4, tf=False, **kwargs)


@register_model
def tf_efficientnet_b0(**kwargs) -> EfficientNet:
    return _efficientnet(1.0, 1.0, tf=True, **kwargs)


@register_model
def tf_efficientnet_b1(**kwargs) -> EfficientNet:
    return _efficientnet(1.0, 1.1, tf=True, **kwargs)


@register_model
def tf_efficientnet_b2(**kwargs) -> EfficientNet:
    return _efficientnet(1.1, 1.2, tf=True, **kwargs)


@register_model
def tf_efficientnet_b3(**kwargs) -> EfficientNet:
    return _efficientnet(1.2, 1.4, tf=True, **kwargs)


@register_model
def tf_efficientnet_lite0(**kwargs) -> EfficientNet:
    return _efficientnet_lite(1.0, 1.0, **kwargs)


@register_model
def tf_efficientnet_lite1(**kwargs) -> EfficientNet:
    return _efficientnet_lite(1.0, 1.1, **kwargs)


@register_model
def tf_efficientnet_lite2(**kwargs) -> EfficientNet:
    return _efficientnet_lite(1.1, 1.2, **kwargs)


@register_model
def tf_efficientnet_lite3(**kwargs) -> EfficientNet:
    return _efficientnet_lite(1.2, 1.4, **kwargs)


@register_model
def tf_efficientnet_lite4(**kwargs) -> EfficientNet:
    return _efficientnet_lite(1.4, 1.8, **kwargs)
