"""Eval-mode outputs equal timm's on the same (random) weights, including odd input sizes.

Tolerance: max |Δ| ≤ 1e-4 of the largest |value|. float32 on these nets lands ~1e-6 from float64, so this
leaves room for a different summation order, not for a wrong padding, eps or layout (those give ≥1e-2).
"""

import jax
import numpy as np
import pytest
import torch

from tests.jitted import eval_outputs
from tests.parity.comparison import TWO_BLOCKS, channels_last, relative_error, size_kwargs
from tests.reference import nchw, reference_pair

pytestmark = pytest.mark.slow  # every family at several sizes against timm

TOLERANCE = 1e-4

# (name, input height, input width): every family at 64 px and at sizes where 'SAME' padding is asymmetric
# and PyTorch padding drops pixels (odd, non-square); ViTs are built for the size (`img_size`), and sizes that
# are not multiples of the patch drop the remainder as timm's patch embedding does.
CASES = [
    ("resnet18", 64, 64),
    ("resnet18", 57, 83),
    ("resnet34", 64, 64),
    ("resnet50", 71, 65),
    ("efficientnet_b0", 64, 64),
    ("efficientnet_b0", 67, 49),
    ("tf_efficientnet_b1", 64, 64),
    ("tf_efficientnet_b1", 67, 49),
    ("tf_efficientnet_lite0", 65, 71),
    ("mobilenetv3_large_100", 64, 64),
    ("mobilenetv3_small_100", 67, 49),
    ("tf_mobilenetv3_large_100", 65, 71),
    ("tf_mobilenetv3_small_100", 64, 64),
    ("skresnet18", 64, 64),
    ("skresnet34", 57, 83),
    ("vit_tiny_patch16_224", 64, 64),
    ("vit_small_patch32_384", 70, 41),
    ("vit_small_patch8_224", 40, 48),
    ("vit_base_patch16_clip_224", 48, 48),
]
# Two blocks of ViT-B still test what the CLIP tower adds: pre-norm, LayerNorm eps 1e-5, the bias-free patch embedding.
SHALLOW = {"vit_base_patch16_clip_224": TWO_BLOCKS}


@pytest.mark.parametrize("name,height,width", CASES)
def test_eval_outputs_equal_timm(timm, name, height, width):
    reference, model = reference_pair(timm, name, num_classes=10, **size_kwargs(name, height, width),
                                      **SHALLOW.get(name, {}))
    reference.eval()
    model.eval()
    x = np.random.default_rng(0).standard_normal((2, height, width, 3), dtype=np.float32)

    with torch.no_grad():
        t_fmap = reference.forward_features(nchw(x))
        t_pre = reference.forward_head(t_fmap, pre_logits=True)
        t_logits = reference.forward_head(t_fmap)
    fmap, pre, logits = jax.device_get(eval_outputs(model, x))

    assert fmap.shape == channels_last(t_fmap).shape
    assert relative_error(fmap, channels_last(t_fmap)) <= TOLERANCE
    assert relative_error(pre, t_pre.numpy()) <= TOLERANCE
    assert relative_error(logits, t_logits.numpy()) <= TOLERANCE
