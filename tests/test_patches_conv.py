"""The patches-times-matrix convolution that Conv2d uses on CPU for 1×1 kernels and maps of a few pixels equals XLA's
convolution, output and gradients, in float64 (to 1e-12: the same products, summed in another order)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from knifejax.ops.patches_conv import conv_output_hw, patches_conv
from knifejax.ops.windows import explicit_pads


@pytest.fixture(autouse=True)
def float64():
    with jax.enable_x64(True):
        yield


def lax_conv(x, kernel, stride, dilation, padding):
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), padding, rhs_dilation=(dilation, dilation),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))  # fmt: skip


@pytest.mark.parametrize(
    "size, kernel, stride, dilation, padding",
    [
        (5, 1, 1, 1, ((0, 0), (0, 0))),  # 1×1: the pointwise convolutions of every MBConv block
        (5, 1, 2, 1, ((0, 0), (0, 0))),  # strided 1×1: ResNet's downsample shortcut
        (5, 1, 2, 1, "SAME"),  # ... of a tf_* model
        (2, 3, 1, 1, ((1, 1), (1, 1))),  # ResNet-18's last stage at 64 px
        (4, 3, 2, 1, ((1, 1), (1, 1))),  # its stride-2 entry
        (2, 3, 1, 2, ((2, 2), (2, 2))),  # SKResNet's dilated path
        (3, 5, 2, 1, "SAME"),  # tf_* models: asymmetric SAME padding
        (9, 4, 4, 1, ((0, 0), (0, 0))),  # patches that tile the input, the remainder dropped: a ViT's patch embedding
        (7, 4, 4, 1, "SAME"),  # ... with padding
    ],
)
def test_equals_xla_convolution_and_its_gradients(size, kernel, stride, dilation, padding):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((3, size, size + 1, 5)))
    w = jnp.asarray(rng.standard_normal((kernel, kernel, 5, 4)))
    expected = lax_conv(x, w, stride, dilation, padding)
    got = patches_conv(x, w, stride, dilation, padding)
    assert got.shape == expected.shape
    assert got.shape[1:3] == conv_output_hw((size, size + 1), kernel, stride, dilation, padding)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    cotangent = jnp.asarray(rng.standard_normal(expected.shape))
    grads = [jax.vjp(lambda x, w: f(x, w, stride, dilation, padding), x, w)[1](cotangent) for f in (lax_conv, patches_conv)]
    for want, have in zip(*grads):
        np.testing.assert_allclose(have, want, rtol=0, atol=1e-11)


def test_conv2d_takes_the_matrix_product_path_for_1x1_and_tiny_maps_on_cpu():
    from flax import nnx

    from knifejax.models.layers import Conv2d

    conv = Conv2d(8, 8, 3, rngs=nnx.Rngs(0))
    assert conv._as_matrix_product((2, 2)) and not conv._as_matrix_product((3, 3))
    pointwise = Conv2d(8, 8, 1, rngs=nnx.Rngs(0))
    assert pointwise._as_matrix_product((2, 2)) and pointwise._as_matrix_product((112, 112))
    assert Conv2d(8, 16, 1, stride=2, rngs=nnx.Rngs(0))._as_matrix_product((56, 56))
    assert not Conv2d(8, 8, 3, groups=8, rngs=nnx.Rngs(0))._as_matrix_product((2, 2))
    assert explicit_pads(conv.padding, (2, 2), (3, 3), 1) == ((1, 1), (1, 1))
