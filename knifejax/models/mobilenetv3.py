"""MobileNetV3 large/small (PyTorch-style and `tf_` TensorFlow-ported), as timm.

Built from the same block strings and blocks as EfficientNet (`efficientnet_blocks.py`), with MobileNetV3's
own choices: hard-swish as the default activation (blocks marked `nre` use ReLU), squeeze-excite sized from
the expanded width, rounded to a multiple of 8, with a ReLU inside and a hard-sigmoid gate, and the "efficient
head" — global pooling first, then a 1x1 `conv_head` with bias and hard-swish, no BatchNorm. So
`forward_features` ends at the last block (960 or 576 channels) and `forward_head(pre_logits=True)` returns
`conv_head`'s output (`head_hidden_size`: 1280 or 1024 features).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
from flax import nnx

from knifejax.models.efficientnet import BN_EPS_TF
from knifejax.models.efficientnet_blocks import BlockArgs, BuildConfig, build_blocks, decode_arch_def, round_channels
from knifejax.models.layers import POOL_TYPES, BatchNorm2d, Conv2d, Linear, get_activation, global_pool, pool_feat_mult
from knifejax.models.registry import register_model

MOBILENETV3_LARGE_ARCH = [
    ["ds_r1_k3_s1_e1_c16_nre"],
    ["ir_r1_k3_s2_e4_c24_nre", "ir_r1_k3_s1_e3_c24_nre"],
    ["ir_r3_k5_s2_e3_c40_se0.25_nre"],
    ["ir_r1_k3_s2_e6_c80", "ir_r1_k3_s1_e2.5_c80", "ir_r2_k3_s1_e2.3_c80"],
    ["ir_r2_k3_s1_e6_c112_se0.25"],
    ["ir_r3_k5_s2_e6_c160_se0.25"],
    ["cn_r1_k1_s1_c960"],
]

MOBILENETV3_SMALL_ARCH = [
    ["ds_r1_k3_s2_e1_c16_se0.25_nre"],
    ["ir_r1_k3_s2_e4.5_c24_nre", "ir_r1_k3_s1_e3.67_c24_nre"],
    ["ir_r1_k5_s2_e4_c40_se0.25", "ir_r2_k5_s1_e6_c40_se0.25"],
    ["ir_r2_k5_s1_e3_c48_se0.25"],
    ["ir_r3_k5_s2_e6_c96_se0.25"],
    ["cn_r1_k1_s1_c576"],
]


class MobileNetV3(nnx.Module):
    grad_cam_layer = "blocks"  # the last spatial map: conv_head runs after pooling (see knifejax.explain)

    def __init__(
        self,
        stages: list[list[BlockArgs]],
        *,
        build: BuildConfig,
        num_classes: int,
        head_hidden_size: int,
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
        self.blocks, self.num_features = build_blocks(stem_size, stages, build, rngs)
        pooled = self.num_features * pool_feat_mult(global_pool)
        self.conv_head = Conv2d(pooled, head_hidden_size, 1, padding=build.pad_type, bias=True, rngs=rngs)
        self.act2 = get_activation(build.act)
        self.head_hidden_size = head_hidden_size
        self.head_drop = nnx.Dropout(drop_rate, rngs=rngs) if drop_rate > 0 else None
        self.classifier = Linear(head_hidden_size, num_classes, rngs=rngs) if num_classes > 0 else None

    def stages(self) -> list[tuple[str, ...]]:
        """Module paths of the feature stages, input to output: stem, each block stage, the head conv.
        Freezing "the first N stages" (`knifejax.train.transfer`) counts in this list."""
        return [("conv_stem", "bn1"), *((f"blocks.{i}",) for i in range(len(self.blocks))), ("conv_head",)]

    def forward_features(self, x: jax.Array) -> jax.Array:
        """(B, H, W, 3) -> the last block's output (B, H/32, W/32, num_features), as timm's forward_features."""
        x = self.bn1(self.conv_stem(x))
        for stage in self.blocks:
            for block in stage:
                x = block(x)
        return x

    def forward_head(self, x: jax.Array, pre_logits: bool = False) -> jax.Array:
        """Pool, `conv_head` + activation, dropout, classifier — timm's order: dropout comes before the
        `pre_logits` exit, so pre-logits features are dropped out in training mode, as timm's are."""
        x = global_pool(x, self.global_pool)[:, None, None, :]
        x = self.act2(self.conv_head(x))[:, 0, 0, :]
        if self.head_drop is not None:
            x = self.head_drop(x)
        if pre_logits or self.classifier is None:
            return x
        return self.classifier(x)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.forward_head(self.forward_features(x))


def _mobilenetv3(arch: list[list[str]], head_hidden_size: int, *, tf: bool, drop_path_rate: float = 0.0,
                 **kwargs) -> MobileNetV3:
    build = BuildConfig(
        pad_type="same" if tf else "",
        act="hard_swish",
        bn_eps=BN_EPS_TF if tf else 1e-5,
        round_chs_fn=partial(round_channels, multiplier=1.0),
        se_from_exp=True,
        se_act="relu",
        se_gate="hard_sigmoid",
        se_round_fn=round_channels,
        drop_path_rate=drop_path_rate,
    )
    return MobileNetV3(
        decode_arch_def(arch), build=build, head_hidden_size=head_hidden_size, stem_size=16, **kwargs
    )


@register_model
def mobilenetv3_large_100(**kwargs) -> MobileNetV3:
    return _mobilenetv3(MOBILENETV3_LARGE_ARCH, 1280, tf=False, **kwargs)


@register_model
def mobilenetv3_small_100(**kwargs) -> MobileNetV3:
    return _mobilenetv3(MOBILENETV3_SMALL_ARCH, 1024, tf=False, **kwargs)


@register_model
def tf_mobilenetv3_large_100(**kwargs) -> MobileNetV3:
    return _mobilenetv3(MOBILENETV3_LARGE_ARCH, 1280, tf=True, **kwargs)


@register_model
def tf_mobilenetv3_small_100(**kwargs) -> MobileNetV3:
    return _mobilenetv3(MOBILENETV3_SMALL_ARCH, 1024, tf=True, **kwargs)
