"""The one-pass BatchNorm backward equals autodiff of the plain formula, for all three outputs, in float64."""

import jax
import jax.numpy as jnp
import numpy as np

from knifejax.ops.batch_norm import batch_norm_train
from tests.jitted import forward


def _plain(x, weight, bias, eps):
    mean = x.mean(axis=(0, 1, 2))
    var = jnp.square(x - mean).mean(axis=(0, 1, 2))
    return (x - mean) * jax.lax.rsqrt(var + eps) * weight + bias, mean, var


def test_outputs_and_gradients_equal_autodiff_of_the_formula():
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        x = jnp.asarray(rng.standard_normal((3, 5, 4, 6)) * 2 + 1)
        weight, bias = jnp.asarray(rng.standard_normal(6)), jnp.asarray(rng.standard_normal(6))
        cotangents = [jnp.asarray(rng.standard_normal(s)) for s in (x.shape, (6,), (6,))]

        def loss(fn):
            return lambda x, w, b: sum(jnp.sum(o * c) for o, c in zip(fn(x, w, b, 1e-3), cotangents))

        for ours, expected in zip(batch_norm_train(x, weight, bias, 1e-3), _plain(x, weight, bias, 1e-3)):
            np.testing.assert_allclose(ours, expected, atol=1e-13)
        grads = jax.grad(loss(batch_norm_train), (0, 1, 2))(x, weight, bias)
        expected = jax.grad(loss(_plain), (0, 1, 2))(x, weight, bias)
        for ours, exact in zip(grads, expected):
            np.testing.assert_allclose(ours, exact, atol=1e-12)


def test_bfloat16_parameters_get_bfloat16_gradients():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((2, 3, 3, 4)), jnp.float32)
    weight, bias = jnp.ones(4, jnp.bfloat16), jnp.zeros(4, jnp.bfloat16)
    grads = jax.grad(lambda x, w, b: jnp.sum(batch_norm_train(x, w, b, 1e-5)[0] ** 2), (0, 1, 2))(x, weight, bias)
    assert [g.dtype for g in grads] == [jnp.float32, jnp.bfloat16, jnp.bfloat16]


def test_one_value_per_channel_in_training_mode_is_an_error_as_in_torch():
    import pytest

    import knifejax as kj

    model = kj.create_model("skresnet18", num_classes=3)  # its attention BatchNorm sees one value per channel
    with pytest.raises(ValueError, match="more than one value per channel"):
        forward(model, np.zeros((1, 32, 32, 3), np.float32))
    model.eval()
    assert forward(model, np.zeros((1, 32, 32, 3), np.float32)).shape == (1, 3)
