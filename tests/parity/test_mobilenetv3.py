"""MobileNetV3's head differs from EfficientNet's: it pools before `conv_head`, so `forward_features` is the last
block (timm's `num_features`) and pre-logits are `conv_head`'s output (timm's `head_hidden_size`). Pooling
variants go through `conv_head` too, which the shared forward test (default pooling only) does not cover."""

import jax
import numpy as np
import pytest
import torch

from tests.jitted import eval_outputs
from tests.parity.comparison import relative_error
from tests.reference import nchw, reference_pair

pytestmark = pytest.mark.slow  # two MobileNetV3 heads against timm


@pytest.mark.parametrize("name,pool", [("mobilenetv3_small_100", "catavgmax"), ("tf_mobilenetv3_small_100", "max")])
def test_pooling_variants_and_widths_equal_timm(timm, name, pool):
    reference, model = reference_pair(timm, name, num_classes=5, global_pool=pool)
    reference.eval()
    model.eval()
    assert (model.num_features, model.head_hidden_size) == (reference.num_features, reference.head_hidden_size)
    x = np.random.default_rng(2).standard_normal((2, 48, 40, 3), dtype=np.float32)
    with torch.no_grad():
        fmap = reference.forward_features(nchw(x))
        expected_pre = reference.forward_head(fmap, pre_logits=True).numpy()
        expected = reference.forward_head(fmap).numpy()
    _, pre, logits = jax.device_get(eval_outputs(model, x))
    assert pre.shape == (2, reference.head_hidden_size)
    assert relative_error(pre, expected_pre) <= 1e-4
    assert relative_error(logits, expected) <= 1e-4
