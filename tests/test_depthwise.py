"""The slice-sum depthwise convolution and its custom backward equal XLA's grouped convolution.

float64 on both sides, so any difference beyond ~1e-13 is a wrong index, pad or stride, not rounding. The kernel
gradient is summed over chunks of the input (`depthwise.CHUNK_BYTES`); these small inputs fit in one chunk, so each
case also runs with chunks of one image and of one output row, as a large layer is summed.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from knifejax.ops import depthwise
from knifejax.ops.depthwise import depthwise_conv
from knifejax.ops.windows import explicit_pads


def _grouped(x, w, stride, pads):
    return lax.conv_general_dilated(x, w[:, :, None, :], (stride, stride), pads,
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=x.shape[-1])  # fmt: skip


# (height, width, kernel, stride, padding): TensorFlow SAME (asymmetric when odd) and PyTorch symmetric, odd and
# even sizes, strides 1 and 2, kernels 3 and 5.
CASES = [(9, 7, 3, 1, "SAME"), (10, 11, 5, 2, "SAME"), (7, 7, 3, 2, "SAME"), (9, 8, 3, 2, ((1, 1), (1, 1))),
         (12, 13, 5, 2, ((2, 2), (2, 2))), (6, 6, 5, 1, ((2, 2), (2, 2)))]  # fmt: skip


@pytest.mark.parametrize("height,width,k,stride,padding", CASES)
def test_output_and_both_gradients_equal_grouped_convolution(height, width, k, stride, padding, monkeypatch):
    rng = np.random.default_rng(k * stride + height)
    with jax.enable_x64(True):
        x = jnp.asarray(rng.standard_normal((2, height, width, 3)))
        w = jnp.asarray(rng.standard_normal((k, k, 3)))
        pads = explicit_pads(padding, (height, width), (k, k), stride)
        expected = _grouped(x, w, stride, pads)
        g = jnp.asarray(rng.standard_normal(expected.shape))
        grads = jax.grad(lambda x, w: jnp.sum(_grouped(x, w, stride, pads) * g), (0, 1))(x, w)
        padded_image_bytes = (height + sum(pads[0])) * (width + sum(pads[1])) * 3 * 8
        for images_per_chunk in (2, 1, 0):  # the whole batch, one image, one output row
            monkeypatch.setattr(depthwise, "CHUNK_BYTES", images_per_chunk * padded_image_bytes)
            # jitted: traced anew for each chunk size, and compiled as one program rather than op by op
            ours = jax.jit(lambda x, w: depthwise_conv(x, w, stride, pads))(x, w)
            ours_grads = jax.jit(jax.grad(lambda x, w: jnp.sum(depthwise_conv(x, w, stride, pads) * g), (0, 1)))(x, w)
            assert ours.shape == expected.shape
            np.testing.assert_allclose(ours, expected, atol=1e-12)
            np.testing.assert_allclose(ours_grads[0], grads[0], atol=1e-12)
            np.testing.assert_allclose(ours_grads[1], grads[1], atol=1e-12, err_msg=f"{images_per_chunk=}")


def test_bfloat16_inputs_keep_their_dtype_and_accumulate_the_kernel_gradient_in_float32():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((4, 8, 8, 6)), jnp.bfloat16)
    w = jnp.asarray(rng.standard_normal((3, 3, 6)), jnp.bfloat16)
    pads = ((1, 1), (1, 1))
    y, vjp = jax.vjp(lambda x, w: depthwise_conv(x, w, 1, pads), x, w)
    grad_x, grad_w = vjp(jnp.ones_like(y))
    assert y.dtype == grad_x.dtype == grad_w.dtype == jnp.bfloat16
    exact = jax.grad(lambda w: jnp.sum(_grouped(x.astype(jnp.float32), w, 1, pads)))(w.astype(jnp.float32))
    np.testing.assert_allclose(np.asarray(grad_w, np.float32), exact, rtol=2e-2)
