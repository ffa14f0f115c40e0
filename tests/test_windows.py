"""The window helpers the slice kernels share: each tap's slice is the input each output pixel's window meets
at that tap, and 'SAME' pads are XLA's."""

import numpy as np
import pytest
from jax import lax

from knifejax.ops.windows import explicit_pads, window_taps


@pytest.mark.parametrize("shape,k_h,k_w,stride", [((2, 7, 9, 3), 3, 3, 2), ((1, 6, 5, 2), 2, 3, 1), ((1, 8, 8, 1), 5, 5, 3)])
def test_window_taps_are_each_output_pixels_window_at_that_tap(shape, k_h, k_w, stride):
    xp = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    out_h, out_w = (shape[1] - k_h) // stride + 1, (shape[2] - k_w) // stride + 1
    taps = list(window_taps(xp, k_h, k_w, stride))
    assert [(a, b) for a, b, _ in taps] == [(a, b) for a in range(k_h) for b in range(k_w)]
    for a, b, tap in taps:
        assert tap.shape == (shape[0], out_h, out_w, shape[3])
        for i in range(out_h):
            for j in range(out_w):
                np.testing.assert_array_equal(tap[:, i, j], xp[:, i * stride + a, j * stride + b])


def test_explicit_pads_same_is_xlas_and_explicit_pairs_pass_through():
    for in_hw, kernel, stride in [((7, 8), (3, 3), 2), ((224, 224), (5, 5), 2), ((6, 6), (2, 2), 1)]:
        assert explicit_pads("SAME", in_hw, kernel, stride) == tuple(
            lax.padtype_to_pads(in_hw, kernel, (stride, stride), "SAME")
        )
    assert explicit_pads("SAME", (7, 8), (3, 3), 2) == ((1, 1), (0, 1))  # odd total padding: the extra row at the end
    assert explicit_pads([[1, 2], [0, 3]], (5, 5), (3, 3), 1) == ((1, 2), (0, 3))
