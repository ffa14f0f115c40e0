"""Train-mode batch normalisation with a one-pass backward (`jax.custom_vjp`).

Autodiff of `(x - mean) * rsqrt(var + eps) * weight + bias` walks the activation four or five times in the
backward (profiled on a 2-core CPU: ~0.4 thread-s per ResNet-18 step, where PyTorch spends ~0.19 s on BatchNorm
forward and backward). The closed form needs two reductions, which XLA fuses into one pass, and one elementwise pass:

    x̂ = (x - mean) · inv,  inv = rsqrt(var + eps),  M = N·H·W
    d_bias = Σ dy,  d_weight = Σ dy · x̂
    dx = weight · inv / M · (M · dy - d_bias - x̂ · d_weight) + d_mean / M + d_var · 2 x̂ / (inv · M)

The batch mean and (biased) variance are outputs too, for the running statistics; their cotangents (zero
when they only feed the stop-gradient running update) are included, so the function is exact under any use.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp


def _statistics(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axis=axes)
    return mean, jnp.mean(jnp.square(x - mean), axis=axes)


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm_train(x: jax.Array, weight: jax.Array, bias: jax.Array, eps: float) -> tuple[jax.Array, ...]:
    """(y, batch mean, biased batch variance) of channels-last `x`, normalised over every axis but the last."""
    mean, var = _statistics(x)
    return (x - mean) * (jax.lax.rsqrt(var + eps) * weight) + bias, mean, var


def _fwd(x, weight, bias, eps):
    mean, var = _statistics(x)
    inv = jax.lax.rsqrt(var + eps)
    y = (x - mean) * (inv * weight) + bias
    return (y, mean, var), (x, mean, inv, weight, bias)


def _bwd(eps, residuals, cotangents):
    x, mean, inv, weight, bias = residuals
    dy, d_mean, d_var = cotangents
    axes = tuple(range(x.ndim - 1))
    m = x.size // x.shape[-1]
    x_hat = (x - mean) * inv
    d_bias = jnp.sum(dy, axis=axes)
    d_weight = jnp.sum(dy * x_hat, axis=axes)
    dx = (weight * inv / m) * (m * dy - d_bias - x_hat * d_weight) + d_mean / m + d_var * (2.0 / m) * x_hat / inv
    return dx.astype(x.dtype), d_weight.astype(weight.dtype), d_bias.astype(bias.dtype)


batch_norm_train.defvjp(_fwd, _bwd)
