"""Parameter initialisers that run on the host (numpy), seeded from the model's `nnx.Rngs`.

Eager JAX compiles one small XLA program per operation and shape, so initialising a model op by op with
`jax.random` cost seconds for each new architecture (EfficientNet-B0: 12–18 s on 2 cores, almost all of it
compilation), where numpy makes the same arrays in milliseconds. The seeds still come from `rngs.params()`,
so the same `seed` gives the same parameters. The arrays are placed with `jax.device_put`: `jnp.asarray` of a numpy
array compiled a small program per shape (about 50 for a network, 0.4 s). Under tracing (`nnx.eval_shape`, or a model built inside
`jax.jit`) the same numpy code runs through `jax.pure_callback`, so traced and eager models are equal too.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


Draw = Callable[[np.random.Generator], np.ndarray]


def _on_host(rngs: nnx.Rngs, shape: tuple[int, ...], draw: Draw) -> jax.Array:
    """float32 array `draw(generator)` of `shape`, the generator seeded by the next `params` key of `rngs`."""
    seed = jax.random.key_data(rngs.params())

    def run(seed_data) -> np.ndarray:
        values = draw(np.random.default_rng(np.asarray(seed_data).ravel().tolist()))
        return np.asarray(values, np.float32).reshape(shape)

    if isinstance(seed, jax.core.Tracer):
        return jax.pure_callback(run, jax.ShapeDtypeStruct(shape, jnp.float32), seed)
    return jax.device_put(run(seed))


def normal(rngs: nnx.Rngs, shape: tuple[int, ...], std: float) -> jax.Array:
    return _on_host(rngs, shape, lambda g: g.standard_normal(shape) * std)


def uniform(rngs: nnx.Rngs, shape: tuple[int, ...], bound: float) -> jax.Array:
    """Uniform on [-bound, bound), as torch's default Linear init."""
    return _on_host(rngs, shape, lambda g: g.uniform(-bound, bound, shape))


def trunc_normal(rngs: nnx.Rngs, shape: tuple[int, ...], std: float, cut: float = 2.0) -> jax.Array:
    """timm's `trunc_normal_(std=std)`: normal values outside ±`cut` (absolute, not in standard deviations)
    are redrawn."""

    def draw(generator: np.random.Generator) -> np.ndarray:
        values = generator.standard_normal(shape) * std
        outside = np.abs(values) > cut
        while outside.any():
            values[outside] = generator.standard_normal(int(outside.sum())) * std
            outside = np.abs(values) > cut
        return values

    return _on_host(rngs, shape, draw)


def constant(shape: tuple[int, ...], value: float) -> jax.Array:
    return jax.device_put(np.full(shape, value, np.float32))
