"""`tiny_test_cnn`: a test-only CNN registered as a knifejax model, for the tests of the training machinery (runs,
checkpoints, resumes, runs side by side, bounded runs, the experiment scripts).

Its train step compiles in about a second and its checkpoints take kilobytes; ResNet-18's train step takes 5-10 s to
compile on the 2-core CPU and its checkpoints 45-130 MB to write. It carries every kind of state a timm network
does (parameters, BatchNorm's running statistics, the RNG), has four stages to freeze, features for the ensembles
and a last spatial map for Grad-CAM. The real architectures train in their own tests (gradient parity, the
end-to-end fine-tune, the step memory account); the four-device check and the side-by-side unit tests take
`EveryCpuPath`, a smaller network of knifejax's own layers.

`python -m tests.tiny_model ARGS` runs `python -m knifejax ARGS` with the tiny CNN registered, and `python -m
tests.tiny_model -m MODULE ARGS` runs `python -m MODULE ARGS` so (an experiment, the stand-in weights), for the tests
whose training runs in a child process; the test modules take it through the `tiny_model` fixture
(tests/conftest.py).
"""

from __future__ import annotations

import contextlib
import math
import runpy
import sys
from collections.abc import Iterator

import jax
import jax.numpy as jnp
from flax import nnx

from knifejax.models import init, registry
from knifejax.models.layers import BatchNorm2d, Conv2d, Linear, max_pool2d

TINY = "tiny_test_cnn"
CONFIG = {"tags": {"test": {"input_size": [3, 32, 32], "mean": [0.5] * 3, "std": [0.5] * 3, "num_classes": 4,
                            "classifier": "fc"}}}


def lecun_normal_on_host(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """flax's default kernel initialiser (a normal of variance 1 / fan-in, truncated at two standard deviations), drawn
    on the host as knifejax's layers draw theirs (`knifejax.models.init`): `jax.random`'s truncated normal compiles a
    program for each shape, about a second each on the 2-core CPU, in every process that builds the network."""
    std = math.sqrt(1.0 / math.prod(shape[:-1])) / 0.87962566103423978  # flax's correction for the truncation
    return init.trunc_normal(nnx.Rngs(params=key), shape, std, cut=2 * std).astype(dtype)


class FlaxInitLinear(Linear):
    """knifejax's `Linear` (timm's key names, `fc.weight` and `fc.bias`, as a timm classifier has), its weight drawn
    as flax's `nnx.Linear` draws its kernel (the next key of `rngs`, the same numbers) and its bias zero: the
    numbers the tiny CNN's tests were set on."""

    def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs):
        self.weight = nnx.Param(lecun_normal_on_host(rngs.params(), (in_features, out_features)))
        self.bias = nnx.Param(jnp.zeros((out_features,)))


class TinyCNN(nnx.Module):
    """conv 3x3 -> BatchNorm -> ReLU -> three conv 3x3 + ReLU -> global mean -> linear; built by the registry
    with the keywords a family's builder takes."""

    grad_cam_layer = "convs.2"

    def __init__(self, *, num_classes: int, pretrained_cfg: dict, rngs: nnx.Rngs, **unused):
        self.pretrained_cfg, self.num_classes = pretrained_cfg, num_classes
        self.conv = nnx.Conv(3, 8, (3, 3), strides=2, kernel_init=lecun_normal_on_host, rngs=rngs)
        self.bn = BatchNorm2d(8)  # knifejax's: a frozen stage puts it in eval mode
        self.convs = nnx.List([nnx.Conv(8, 8, (3, 3), kernel_init=lecun_normal_on_host, rngs=rngs) for _ in range(3)])
        self.fc = FlaxInitLinear(8, num_classes, rngs=rngs)
        self.head_hidden_size = 8

    def stages(self) -> list[tuple[str, ...]]:
        return [("conv", "bn"), ("convs.0",), ("convs.1",), ("convs.2",)]

    def forward_features(self, x: jax.Array) -> jax.Array:
        x = jax.nn.relu(self.bn(self.conv(x)))
        for conv in self.convs:
            x = jax.nn.relu(conv(x))
        return x

    def forward_head(self, x: jax.Array, pre_logits: bool = False) -> jax.Array:
        x = x.mean(axis=(1, 2))
        return x if pre_logits else self.fc(x)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.forward_head(self.forward_features(x))


class EveryCpuPath(nnx.Module):
    """knifejax's own layers, each XLA:CPU path of the real networks once: a 3x3 convolution (XLA's), BatchNorm (its
    one-pass backward), the max-pool, a depthwise convolution (shifted slice-sums) and a 1x1 one (a matrix product
    over patches), all in `knifejax.ops`, and a linear head. For the tests of a transformation of the train step
    (members stacked under vmap, the batch split over devices, bf16 compute) on every path at once, in a program that
    compiles in a second; its parameters are drawn on the host as the real networks' are."""

    def __init__(self, num_classes: int, *, rngs: nnx.Rngs):
        self.conv = Conv2d(3, 4, 3, rngs=rngs)
        self.bn = BatchNorm2d(4, act="relu")
        self.depthwise = Conv2d(4, 4, 3, groups=4, rngs=rngs)
        self.pointwise = Conv2d(4, 4, 1, rngs=rngs)
        self.head = Linear(4, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = max_pool2d(self.bn(self.conv(x)), 3, 2, 1)
        return self.head(jax.nn.relu(self.pointwise(self.depthwise(x))).mean(axis=(1, 2)))


@contextlib.contextmanager
def registered(*aliases: str) -> Iterator[None]:
    """The tiny CNN as `tiny_test_cnn` (its own configuration: 32 px, 4 classes), and under each of `aliases`, real
    architecture names that keep their own configuration (input size, normalisation), for the duration."""
    import pytest

    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(registry._BUILDERS, TINY, TinyCNN)
        patch.setitem(registry._all_pretrained_cfgs(), TINY, CONFIG)
        for name in aliases:
            patch.setitem(registry._BUILDERS, name, TinyCNN)
        yield


if __name__ == "__main__":
    module = "knifejax"
    if sys.argv[1:2] == ["-m"]:
        module = sys.argv[2]
        del sys.argv[1:3]
    with registered():
        runpy.run_module(module, run_name="__main__", alter_sys=True)
