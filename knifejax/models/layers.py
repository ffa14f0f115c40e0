"""Building blocks shared by every family, named and laid out so timm's state-dict keys map by rule.

Each parameterised layer keeps timm's leaf names (`weight`, `bias`, `running_mean`, `running_var`) and
declares in `torch_layout` how its arrays are permuted relative to PyTorch's, so checkpoint I/O needs no
per-layer code. Activations are channels last (NHWC) throughout.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from knifejax.models import init
from knifejax.ops.batch_norm import batch_norm_train
from knifejax.ops.depthwise import depthwise_conv
from knifejax.ops.max_pool import max_pool
from knifejax.ops.patches_conv import MAX_OUTPUT_PIXELS, conv_output_hw, patches_conv
from knifejax.ops.windows import explicit_pads

Array = jax.Array


def hard_sigmoid(x: Array) -> Array:
    """timm/PyTorch hard sigmoid: relu6(x + 3) / 6 (not jax.nn.hard_sigmoid's slope)."""
    return jnp.clip(x + 3.0, 0.0, 6.0) / 6.0


def hard_swish(x: Array) -> Array:
    return x * hard_sigmoid(x)


def gelu(x: Array) -> Array:
    """PyTorch's default GELU, the exact erf form."""
    return jax.nn.gelu(x, approximate=False)


ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "relu": jax.nn.relu,
    "relu6": jax.nn.relu6,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "sigmoid": jax.nn.sigmoid,
    "hard_sigmoid": hard_sigmoid,
    "hard_swish": hard_swish,
    "gelu": gelu,
    "identity": lambda x: x,
}


def get_activation(name: str) -> Callable[[Array], Array]:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}") from None


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None, round_limit: float = 0.9) -> int:
    """timm's channel rounding: nearest multiple of `divisor`, never more than 10% below `v`."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v


def symmetric_padding(kernel_size: int, stride: int = 1, dilation: int = 1) -> int:
    """timm's default (PyTorch-style) padding; flax's 'SAME' differs from it when stride > 1."""
    return ((stride - 1) + dilation * (kernel_size - 1)) // 2


class Conv2d(nnx.Module):
    """2-D convolution with timm's padding rules.

    padding: '' (timm default: symmetric, as PyTorch), 'same' (TensorFlow 'SAME': asymmetric for even
    overhang, used by the `tf_*` models), or an explicit int.
    Kernel stored HWIO (flax); PyTorch stores OIHW.
    """

    torch_layout: ClassVar[dict[str, tuple[int, ...]]] = {"weight": (3, 2, 0, 1)}

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int,
        *,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        padding: str | int = "",
        bias: bool = False,
        rngs: nnx.Rngs,
    ):
        if in_chs % groups or out_chs % groups:
            raise ValueError(f"channels {in_chs}->{out_chs} are not divisible by groups={groups}")
        fan_out = kernel_size * kernel_size * out_chs // groups
        shape = (kernel_size, kernel_size, in_chs // groups, out_chs)
        self.weight = nnx.Param(init.normal(rngs, shape, math.sqrt(2.0 / fan_out)))
        self.bias = nnx.Param(init.constant((out_chs,), 0.0)) if bias else None
        self.stride = stride
        self.dilation = dilation
        self.groups = groups
        if padding == "same":
            self.padding: str | tuple[tuple[int, int], ...] = "SAME"
        elif padding == "":
            p = symmetric_padding(kernel_size, stride, dilation)
            self.padding = ((p, p), (p, p))
        elif isinstance(padding, int):
            self.padding = ((padding, padding), (padding, padding))
        else:
            raise ValueError(f"padding must be '', 'same' or an int, got {padding!r}")

    def __call__(self, x: Array) -> Array:
        kernel = self.weight[...].astype(x.dtype)
        if self._depthwise_as_slices():
            k = kernel.shape[0]
            pads = explicit_pads(self.padding, x.shape[1:3], (k, k), self.stride)
            y = depthwise_conv(x, kernel[:, :, 0, :], self.stride, pads)
        elif self._as_matrix_product(x.shape[1:3]):
            y = patches_conv(x, kernel, self.stride, self.dilation, self.padding)
        else:
            y = self._lax_conv(x, kernel)
        if self.bias is not None:
            y = y + self.bias[...].astype(y.dtype)
        return y

    def _depthwise_as_slices(self) -> bool:
        """Depthwise, undilated, on CPU: XLA:CPU's grouped convolution is 4-16x slower there than shifted
        slice-sums, forward and backward (`knifejax.ops.depthwise`, docs/performance.md). GPUs keep XLA's
        convolution (cuDNN), which is not measured to lose."""
        depthwise = self.groups > 1 and self.groups == self.weight.shape[3] and self.weight.shape[2] == 1
        return depthwise and self.dilation == 1 and jax.default_backend() == "cpu"

    def _as_matrix_product(self, in_hw: tuple[int, int]) -> bool:
        """On CPU, a 1×1 convolution, or one producing a map of a few pixels, as a matrix product over gathered
        patches (`knifejax.ops.patches_conv`): XLA:CPU's convolution takes 2-7× longer for the 1×1 forward,
        3-5× with its gradients, and is pathologically slow on tiny maps."""
        k = self.weight.shape[0]
        if self.groups != 1 or jax.default_backend() != "cpu":
            return False
        if k == 1:
            return True
        ho, wo = conv_output_hw(in_hw, k, self.stride, self.dilation, self.padding)
        return ho * wo <= MAX_OUTPUT_PIXELS

    def _lax_conv(self, x: Array, kernel: Array) -> Array:
        return jax.lax.conv_general_dilated(
            x,
            kernel,
            window_strides=(self.stride, self.stride),
            padding=self.padding,
            rhs_dilation=(self.dilation, self.dilation),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=self.groups,
        )


class Linear(nnx.Module):
    """Dense layer; kernel stored (in, out), PyTorch stores (out, in). Init as torch.nn.Linear."""

    torch_layout: ClassVar[dict[str, tuple[int, ...]]] = {"weight": (1, 0)}

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True, rngs: nnx.Rngs):
        bound = 1.0 / math.sqrt(in_features)
        self.weight = nnx.Param(
            init.uniform(rngs, (in_features, out_features), bound)
        )
        self.bias = (
            nnx.Param(init.uniform(rngs, (out_features,), bound))
            if bias
            else None
        )

    def __call__(self, x: Array) -> Array:
        y = x @ self.weight[...].astype(x.dtype)
        if self.bias is not None:
            y = y + self.bias[...].astype(y.dtype)
        return y


def max_pool2d(x: jax.Array, kernel_size: int, stride: int, padding: int) -> jax.Array:
    """PyTorch's `MaxPool2d(kernel_size, stride, padding)` on NHWC (padding by -inf, gradient to each window's
    first maximum; `knifejax.ops.max_pool`)."""
    return max_pool(x, kernel_size, stride, ((padding, padding), (padding, padding)))


class BatchNorm2d(nnx.Module):
    """BatchNorm over NHWC with PyTorch's conventions, optionally followed by an activation (timm's
    BatchNormAct2d).

    Train mode normalises with the biased batch variance and updates the running statistics as
    `running = (1 - momentum) * running + momentum * batch`, the variance unbiased (n / (n - 1)), exactly
    as torch. Statistics are computed in at least float32 (bf16 inputs are promoted, float64 kept). The train
    path has a one-pass backward (`knifejax.ops.batch_norm`).
    """

    def __init__(self, num_features: int, *, eps: float = 1e-5, momentum: float = 0.1, act: str = "identity"):
        self.weight = nnx.Param(init.constant((num_features,), 1.0))
        self.bias = nnx.Param(init.constant((num_features,), 0.0))
        self.running_mean = nnx.BatchStat(init.constant((num_features,), 0.0))
        self.running_var = nnx.BatchStat(init.constant((num_features,), 1.0))
        self.eps = eps
        self.momentum = momentum
        self.act = get_activation(act)
        self.use_running_average = False

    def __call__(self, x: Array) -> Array:
        xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
        if self.use_running_average:
            scale = self.weight[...] * jax.lax.rsqrt(self.running_var[...] + self.eps)
            y = (xf - self.running_mean[...]) * scale + self.bias[...]
        else:
            n = x.size // x.shape[-1]
            if n == 1:
                raise ValueError(
                    f"BatchNorm in training mode needs more than one value per channel, got input {x.shape}: use a "
                    "batch of at least 2 images, or model.eval() (as torch raises for the same input)"
                )
            y, mean, var = batch_norm_train(xf, self.weight[...], self.bias[...], self.eps)
            m = self.momentum
            self.running_mean[...] = (1 - m) * self.running_mean[...] + m * jax.lax.stop_gradient(mean)
            unbiased = jax.lax.stop_gradient(var) * (n / max(n - 1, 1))
            self.running_var[...] = (1 - m) * self.running_var[...] + m * unbiased
        return self.act(y.astype(x.dtype))


class LayerNorm(nnx.Module):
    """PyTorch's LayerNorm over the last axis (biased variance, eps inside the square root), with affine
    `weight`/`bias`. Computed in at least float32 (bf16 inputs are promoted, float64 kept) and returned in the
    input's dtype. timm's ViTs use eps 1e-6, its CLIP towers PyTorch's default 1e-5."""

    def __init__(self, num_features: int, *, eps: float = 1e-5):
        self.weight = nnx.Param(init.constant((num_features,), 1.0))
        self.bias = nnx.Param(init.constant((num_features,), 0.0))
        self.eps = eps

    def __call__(self, x: Array) -> Array:
        xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
        mean = jnp.mean(xf, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
        y = (xf - mean) * jax.lax.rsqrt(var + self.eps) * self.weight[...] + self.bias[...]
        return y.astype(x.dtype)


class SqueezeExcite(nnx.Module):
    """timm's SqueezeExcite: global mean, 1x1 reduce (+bias), act, 1x1 expand (+bias), gate, rescale."""

    def __init__(self, chs: int, rd_chs: int, *, act: str = "relu", gate: str = "sigmoid", rngs: nnx.Rngs):
        self.conv_reduce = Conv2d(chs, rd_chs, 1, bias=True, rngs=rngs)
        self.conv_expand = Conv2d(rd_chs, chs, 1, bias=True, rngs=rngs)
        self.act = get_activation(act)
        self.gate = get_activation(gate)

    def __call__(self, x: Array) -> Array:
        s = jnp.mean(x, axis=(1, 2), keepdims=True)
        s = self.conv_expand(self.act(self.conv_reduce(s)))
        return x * self.gate(s)


class DropPath(nnx.Module):
    """Stochastic depth per sample (timm's DropPath): zero a sample's residual branch with probability
    `rate` in training and scale the survivors by 1 / (1 - rate)."""

    def __init__(self, rate: float, *, rngs: nnx.Rngs):
        self.rate = rate
        self.deterministic = False
        self.rngs = rngs.dropout.fork()

    def __call__(self, x: Array) -> Array:
        if self.deterministic or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = jax.random.bernoulli(self.rngs(), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
        return jnp.where(mask, x / keep, jnp.zeros_like(x))


POOL_TYPES = ("avg", "max", "avgmax", "catavgmax")


def global_pool(x: Array, pool_type: str) -> Array:
    """timm's SelectAdaptivePool2d with flatten: (B, H, W, C) -> (B, C) (2C for 'catavgmax')."""
    if pool_type == "avg":
        return jnp.mean(x, axis=(1, 2))
    if pool_type == "max":
        return jnp.max(x, axis=(1, 2))
    if pool_type == "avgmax":
        return 0.5 * (jnp.mean(x, axis=(1, 2)) + jnp.max(x, axis=(1, 2)))
    if pool_type == "catavgmax":
        return jnp.concatenate([jnp.mean(x, axis=(1, 2)), jnp.max(x, axis=(1, 2))], axis=-1)
    raise ValueError(f"global_pool must be one of {POOL_TYPES}, got {pool_type!r}")


def pool_feat_mult(pool_type: str) -> int:
    return 2 if pool_type == "catavgmax" else 1


def head_forward(
    x: Array,
    *,
    pool_type: str,
    dropout: nnx.Dropout | None,
    classifier: Linear | None,
    pre_logits: bool,
) -> Array:
    """timm's forward_head: pool, dropout, then the classifier unless `pre_logits` (or num_classes=0)."""
    x = global_pool(x, pool_type)
    if dropout is not None:
        x = dropout(x)
    if pre_logits or classifier is None:
        return x
    return classifier(x)
