"""Grad-CAM equals pytorch-grad-cam's GradCAM on the same timm weights (random, BatchNorm statistics randomised).

Tolerance: max |Δ| ≤ 1e-3 on the (B, H, W) maps in [0, 1]. Both sides compute in float32; the maps are ratios
of small weighted sums, so float32 rounding of the gradients moves them by ~1e-5 — a wrong layer, target,
weighting, ReLU, scaling or resize moves them by ≥ 1e-1.
"""

import numpy as np
import pytest
import torch

from knifejax.explain import grad_cam, grad_cam_and_scores
from tests.parity.comparison import TWO_BLOCKS
from tests.reference import nchw, reference_pair

pytestmark = pytest.mark.slow  # Grad-CAM of six networks against pytorch-grad-cam

TOLERANCE = 1e-3


def _vit_reshape(tensor, height=4, width=5):
    """pytorch-grad-cam's documented ViT reshape_transform (class token dropped, tokens to the patch grid)."""
    result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
    return result.transpose(2, 3).transpose(1, 2)


# (name, knifejax layer or None for the default, pytorch-grad-cam target layer, input (H, W), model keywords). The
# ViT on two blocks: the map is taken at the last block's norm1 as with twelve.
CASES = [
    ("resnet18", None, lambda m: m.layer4[-1], (96, 80), {}),
    ("resnet18", "layer3.0", lambda m: m.layer3[0], (96, 80), {}),
    ("efficientnet_b0", None, lambda m: m.bn2, (96, 80), {}),
    ("efficientnet_b0", "blocks.5", lambda m: m.blocks[5], (64, 64), {}),
    ("mobilenetv3_large_100", None, lambda m: m.blocks[-1], (96, 80), {}),
    ("skresnet18", None, lambda m: m.layer4[-1], (64, 72), {}),
    ("vit_small_patch16_224", None, lambda m: m.blocks[-1].norm1, (64, 80), {"img_size": (64, 80), **TWO_BLOCKS}),
]


@pytest.mark.parametrize("name,layer,target_layer,size,kwargs", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_maps_equal_pytorch_grad_cam(timm, name, layer, target_layer, size, kwargs):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    reference, model = reference_pair(timm, name, num_classes=10, **kwargs)
    reference.eval()
    x = np.random.default_rng(0).standard_normal((3, *size, 3), dtype=np.float32)
    reshape = _vit_reshape if name.startswith("vit_") else None
    cam = GradCAM(model=reference, target_layers=[target_layer(reference)], reshape_transform=reshape)

    expected_argmax = cam(input_tensor=nchw(x), targets=None)
    maps, chosen, probs = grad_cam_and_scores(model, x, layer=layer)
    with torch.no_grad():
        expected_probs = reference(nchw(x)).softmax(-1).numpy()
    assert np.array_equal(np.asarray(chosen), expected_probs.argmax(-1))
    assert np.abs(np.asarray(probs) - expected_probs).max() <= 1e-5
    assert maps.shape == (3, *size) and maps.dtype == np.float32
    assert np.abs(np.asarray(maps) - expected_argmax).max() <= TOLERANCE

    targets = [7, 0, 3]
    expected = cam(input_tensor=nchw(x), targets=[ClassifierOutputTarget(c) for c in targets])
    assert np.abs(np.asarray(grad_cam(model, x, np.array(targets), layer)) - expected).max() <= TOLERANCE
