"""Max pooling as strided slices with its custom backward equals PyTorch's `max_pool2d`, output and input
gradient, in float64 (exact: a maximum and a routing of each gradient, no arithmetic that could round),
including tied windows, where the gradient goes to the first maximum in row-major order."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from knifejax.ops.max_pool import max_pool


@pytest.fixture(autouse=True)
def float64():
    with jax.enable_x64(True):
        yield


def torch_pool_and_grad(x: np.ndarray, g: np.ndarray, k: int, stride: int, pad: int):
    xt = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    yt = torch.nn.functional.max_pool2d(xt, k, stride, pad)
    yt.backward(torch.tensor(g.transpose(0, 3, 1, 2)))
    return yt.detach().numpy().transpose(0, 2, 3, 1), xt.grad.numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("shape, k, stride, pad", [((2, 9, 8, 3), 3, 2, 1), ((1, 7, 7, 2), 3, 1, 1), ((2, 6, 9, 2), 2, 2, 0)])
@pytest.mark.parametrize("ties", [False, True])
def test_equals_torch_max_pool_output_and_gradient(shape, k, stride, pad, ties):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    if ties:  # after a ReLU: many windows all zero, or with repeated maxima
        x = np.maximum(np.round(x), 0.0)
    y = max_pool(jnp.asarray(x), k, stride, ((pad, pad), (pad, pad)))
    g = rng.standard_normal(y.shape)
    want_y, want_grad = torch_pool_and_grad(x, g, k, stride, pad)
    np.testing.assert_array_equal(y, want_y)
    _, vjp = jax.vjp(lambda x: max_pool(x, k, stride, ((pad, pad), (pad, pad))), jnp.asarray(x))
    np.testing.assert_allclose(vjp(jnp.asarray(g))[0], want_grad, rtol=0, atol=1e-12)
