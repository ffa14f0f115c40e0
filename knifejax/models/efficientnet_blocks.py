"""timm's block-string architecture definitions and the blocks they build (EfficientNet, MobileNetV3).

An architecture is a list of stages, each a list of block strings such as `ir_r2_k3_s2_e6_c24_se0.25`:
block type (`ds` depthwise-separable, `ir` inverted residual, `cn` conv-bn-act), repeats `r`, depthwise
kernel `k`, stride `s`, expansion `e`, output channels `c`, squeeze-excite ratio `se`, activation override
`n` (`re`, `r6`, `hs`, `sw`) and `noskip`. Decoding, depth scaling and channel rounding follow
timm's `_efficientnet_builder.py` exactly so that the same names give the same shapes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace

import jax
from flax import nnx

from knifejax.models.layers import BatchNorm2d, Conv2d, DropPath, SqueezeExcite, make_divisible

_ACT_CODES = {"re": "relu", "r6": "relu6", "hs": "hard_swish", "sw": "silu"}


@dataclass(frozen=True)
class BlockArgs:
    block_type: str
    out_chs: int
    stride: int
    kernel_size: int
    exp_ratio: float = 1.0
    se_ratio: float = 0.0
    noskip: bool = False
    act: str | None = None


def decode_block_str(block_str: str) -> tuple[BlockArgs, int]:
    """Decode one block string into its arguments and repeat count."""
    block_type, *ops = block_str.split("_")
    if block_type not in ("ds", "ir", "cn"):
        raise ValueError(f"unsupported block type {block_type!r} in {block_str!r}")
    options: dict[str, str] = {}
    noskip = False
    act = None
    for op in ops:
        if op == "noskip":
            noskip = True
        elif op.startswith("n"):
            act = _ACT_CODES.get(op[1:], act)
        else:
            key, value, *_ = re.split(r"(\d.*)", op)
            options[key] = value
    args = BlockArgs(
        block_type=block_type,
        out_chs=int(options["c"]),
        stride=int(options["s"]),
        kernel_size=int(options["k"]),
        exp_ratio=float(options.get("e", 1.0)),
        se_ratio=float(options.get("se", 0.0)),
        noskip=noskip,
        act=act,
    )
    return args, int(options["r"])


def _scale_stage_depth(stage: list[tuple[BlockArgs, int]], depth_multiplier: float) -> list[BlockArgs]:
    """timm's 'ceil' depth scaling, spread over the stage's block strings from the last one backwards."""
    repeats = [r for _, r in stage]
    num_repeat = sum(repeats)
    num_repeat_scaled = int(math.ceil(num_repeat * depth_multiplier))
    scaled = []
    for r in repeats[::-1]:
        rs = max(1, round(r / num_repeat * num_repeat_scaled))
        scaled.append(rs)
        num_repeat -= r
        num_repeat_scaled -= rs
    return [args for (args, _), rep in zip(stage, scaled[::-1]) for _ in range(rep)]


def decode_arch_def(
    arch_def: list[list[str]], depth_multiplier: float = 1.0, fix_first_last: bool = False
) -> list[list[BlockArgs]]:
    """Decode every stage; `fix_first_last` keeps the first and last stage depths (EfficientNet-Lite)."""
    stages = []
    for i, block_strings in enumerate(arch_def):
        fixed = fix_first_last and i in (0, len(arch_def) - 1)
        stage = [decode_block_str(s) for s in block_strings]
        stages.append(_scale_stage_depth(stage, 1.0 if fixed else depth_multiplier))
    return stages


def round_channels(channels: int, multiplier: float = 1.0, divisor: int = 8) -> int:
    return make_divisible(channels * multiplier, divisor) if multiplier else channels


@dataclass(frozen=True)
class BuildConfig:
    """Family-wide settings of the blocks (timm's EfficientNetBuilder arguments)."""

    pad_type: str = ""
    act: str = "relu"
    bn_eps: float = 1e-5
    round_chs_fn: Callable[[float], int] = round_channels
    se_from_exp: bool = False
    se_act: str | None = None
    se_gate: str = "sigmoid"
    se_round_fn: Callable[[float], int] = round
    drop_path_rate: float = 0.0


class DepthwiseSeparableConv(nnx.Module):
    """timm `ds` block: depthwise conv, BN+act, SE, pointwise conv, BN (no act), residual if shapes allow."""

    def __init__(self, in_chs: int, a: BlockArgs, cfg: BuildConfig, act: str, se_chs: int, dpr: float, rngs):
        self.has_skip = a.stride == 1 and in_chs == a.out_chs and not a.noskip
        self.conv_dw = Conv2d(
            in_chs, in_chs, a.kernel_size, stride=a.stride, groups=in_chs, padding=cfg.pad_type, rngs=rngs
        )
        self.bn1 = BatchNorm2d(in_chs, eps=cfg.bn_eps, act=act)
        self.se = _make_se(in_chs, se_chs, act, cfg, rngs)
        self.conv_pw = Conv2d(in_chs, a.out_chs, 1, padding=cfg.pad_type, rngs=rngs)
        self.bn2 = BatchNorm2d(a.out_chs, eps=cfg.bn_eps)
        self.drop_path = DropPath(dpr, rngs=rngs) if dpr else None

    def __call__(self, x: jax.Array) -> jax.Array:
        shortcut = x
        x = self.bn1(self.conv_dw(x))
        if self.se is not None:
            x = self.se(x)
        x = self.bn2(self.conv_pw(x))
        return _residual(x, shortcut, self.has_skip, self.drop_path)


class InvertedResidual(nnx.Module):
    """timm `ir` block: 1x1 expand, BN+act, depthwise, BN+act, SE, 1x1 project, BN, residual."""

    def __init__(self, in_chs: int, a: BlockArgs, cfg: BuildConfig, act: str, se_chs: int, dpr: float, rngs):
        mid_chs = make_divisible(in_chs * a.exp_ratio)
        self.has_skip = in_chs == a.out_chs and a.stride == 1 and not a.noskip
        self.conv_pw = Conv2d(in_chs, mid_chs, 1, padding=cfg.pad_type, rngs=rngs)
        self.bn1 = BatchNorm2d(mid_chs, eps=cfg.bn_eps, act=act)
        self.conv_dw = Conv2d(
            mid_chs, mid_chs, a.kernel_size, stride=a.stride, groups=mid_chs, padding=cfg.pad_type, rngs=rngs
        )
        self.bn2 = BatchNorm2d(mid_chs, eps=cfg.bn_eps, act=act)
        self.se = _make_se(mid_chs, se_chs, act, cfg, rngs)
        self.conv_pwl = Conv2d(mid_chs, a.out_chs, 1, padding=cfg.pad_type, rngs=rngs)
        self.bn3 = BatchNorm2d(a.out_chs, eps=cfg.bn_eps)
        self.drop_path = DropPath(dpr, rngs=rngs) if dpr else None

    def __call__(self, x: jax.Array) -> jax.Array:
        shortcut = x
        x = self.bn1(self.conv_pw(x))
        x = self.bn2(self.conv_dw(x))
        if self.se is not None:
            x = self.se(x)
        x = self.bn3(self.conv_pwl(x))
        return _residual(x, shortcut, self.has_skip, self.drop_path)


class ConvBnAct(nnx.Module):
    """timm `cn` block: conv, BN+act, no residual (timm's `ConvBnAct` has one only when built with `skip=True`,
    which no block string asks for)."""

    def __init__(self, in_chs: int, a: BlockArgs, cfg: BuildConfig, act: str, se_chs: int, dpr: float, rngs):
        self.conv = Conv2d(in_chs, a.out_chs, a.kernel_size, stride=a.stride, padding=cfg.pad_type, rngs=rngs)
        self.bn1 = BatchNorm2d(a.out_chs, eps=cfg.bn_eps, act=act)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.bn1(self.conv(x))


_BLOCKS = {"ds": DepthwiseSeparableConv, "ir": InvertedResidual, "cn": ConvBnAct}


def _make_se(chs: int, se_chs: int, block_act: str, cfg: BuildConfig, rngs) -> SqueezeExcite | None:
    if not se_chs:
        return None
    return SqueezeExcite(chs, se_chs, act=cfg.se_act or block_act, gate=cfg.se_gate, rngs=rngs)


def _residual(x: jax.Array, shortcut: jax.Array, has_skip: bool, drop_path: DropPath | None) -> jax.Array:
    if not has_skip:
        return x
    if drop_path is not None:
        x = drop_path(x)
    return x + shortcut


def _se_channels(in_chs: int, a: BlockArgs, cfg: BuildConfig) -> int:
    """Squeeze width as timm computes it: from the block input (EfficientNet) or the expanded width
    (MobileNetV3, `se_from_exp`), rounded by the family's rule."""
    if not a.se_ratio:
        return 0
    ratio = a.se_ratio if cfg.se_from_exp else a.se_ratio / a.exp_ratio
    chs = make_divisible(in_chs * a.exp_ratio) if a.block_type == "ir" else in_chs
    return cfg.se_round_fn(chs * ratio)


def build_blocks(in_chs: int, stages: list[list[BlockArgs]], cfg: BuildConfig, rngs) -> tuple[nnx.List, int]:
    """Build the stages as nested nnx.Lists (paths `blocks.<stage>.<index>`), returning them and the
    channel count they end with. Only the first block of a stage strides; drop-path grows linearly."""
    total = sum(len(s) for s in stages)
    index = 0
    built = []
    for stage in stages:
        blocks = []
        for j, a in enumerate(stage):
            a = replace(a, out_chs=cfg.round_chs_fn(a.out_chs), stride=a.stride if j == 0 else 1)
            dpr = cfg.drop_path_rate * index / total
            block = _BLOCKS[a.block_type](in_chs, a, cfg, a.act or cfg.act, _se_channels(in_chs, a, cfg), dpr, rngs)
            blocks.append(block)
            in_chs = a.out_chs
            index += 1
        built.append(nnx.List(blocks))
    return nnx.List(built), in_chs
