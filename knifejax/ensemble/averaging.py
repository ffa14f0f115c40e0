"""Score averaging: the members' probabilities combined by a (weighted) arithmetic or geometric mean.

Arithmetic: `sum_m w_m softmax(z_m)`, the study's score averaging. Geometric: `softmax(sum_m w_m
log_softmax(z_m))`, the weighted geometric mean of the probabilities renormalised to sum to 1 — one member
that rules a class out (probability near 0) vetoes it, where the arithmetic mean only halves it.
Weights are normalised to sum to 1; by default every member counts the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from knifejax.errors import ConfigError

METHODS = ("average", "geometric")


def normalized_weights(weights: Sequence[float] | None, num_members: int) -> np.ndarray:
    """`weights` as float32 summing to 1 (equal weights when None); a clear error for a wrong count or sign."""
    if num_members < 1:
        raise ConfigError("an ensemble needs at least one member")
    if weights is None:
        return np.full(num_members, 1.0 / num_members, np.float32)
    w = np.asarray(weights, np.float64).reshape(-1)
    if w.size != num_members:
        raise ConfigError(f"{w.size} weights for {num_members} members: give one weight per member")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ConfigError(f"weights must be finite, non-negative and not all zero, got {list(w)}")
    return (w / w.sum()).astype(np.float32)


@jax.jit
def _arithmetic(logits: jax.Array, w: jax.Array) -> jax.Array:
    return jnp.einsum("m,mnc->nc", w, jax.nn.softmax(logits, axis=-1))


@jax.jit
def _geometric(logits: jax.Array, w: jax.Array) -> jax.Array:
    return jax.nn.softmax(jnp.einsum("m,mnc->nc", w, jax.nn.log_softmax(logits, axis=-1)), axis=-1)


def average_scores(
    member_logits: Sequence[np.ndarray], weights: Sequence[float] | None = None, *, geometric: bool = False
) -> np.ndarray:
    """Combine M members' scores of the same N images into (N, C) float32 probabilities.

    member_logits: M arrays (N, C) of logits (any scores whose softmax is the member's probabilities).
    weights: one non-negative weight per member (normalised to sum to 1); None: equal weights.
    geometric: the weighted mean of log-probabilities, renormalised, instead of the mean of probabilities.
    """
    if len(member_logits) == 0:
        raise ValueError("average_scores needs the scores of at least one member")
    shapes = {np.shape(z) for z in member_logits}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"every member's scores must be one (N, C) shape, got {[np.shape(z) for z in member_logits]}")
    stacked = jnp.asarray(np.stack([np.asarray(z, np.float32) for z in member_logits]))
    w = jnp.asarray(normalized_weights(weights, len(member_logits)))
    return np.asarray((_geometric if geometric else _arithmetic)(stacked, w))
