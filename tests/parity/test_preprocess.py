"""kj.preprocess equals the torchvision transforms it stands for, on the same PIL image."""

import numpy as np
import pytest
from PIL import Image

import knifejax as kj


@pytest.fixture
def photo():
    from skimage import data

    return data.coffee()  # 400x600 RGB


def _torchvision(image, size, interpolation, center_crop, cfg):
    from torchvision import transforms as T

    mode = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC}[interpolation]
    steps = (
        [T.Resize(int(size / cfg["crop_pct"]), interpolation=mode), T.CenterCrop(size)]
        if center_crop
        else [T.Resize((size, size), interpolation=mode)]
    )
    pipeline = T.Compose([*steps, T.ToTensor(), T.Normalize(cfg["mean"], cfg["std"])])
    return pipeline(Image.fromarray(image)).numpy().transpose(1, 2, 0)


@pytest.mark.parametrize("resize_mode,interpolation", [("squash", "bilinear"), ("center_crop", "bicubic")])
def test_preprocess_equals_torchvision(timm, photo, resize_mode, interpolation):
    cfg = kj.get_pretrained_cfg("resnet18.tv_in1k")
    ours = kj.preprocess([photo, photo[::-1]], cfg, size=160, resize_mode=resize_mode, interpolation=interpolation)
    assert ours.shape == (2, 160, 160, 3) and ours.dtype == np.float32
    center = resize_mode == "center_crop"
    np.testing.assert_allclose(ours[0], _torchvision(photo, 160, interpolation, center, cfg), atol=1e-5)
    np.testing.assert_allclose(ours[1], _torchvision(photo[::-1].copy(), 160, interpolation, center, cfg), atol=1e-5)


def test_preprocess_drops_alpha_and_replicates_grey():
    cfg = kj.get_pretrained_cfg("tf_efficientnet_lite0")
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 0  # fully transparent: the colour values are kept, as cv2.IMREAD_COLOR does
    x = kj.preprocess(rgba, cfg, size=8)
    np.testing.assert_allclose(x[0, ..., 0], 1.0)
    np.testing.assert_allclose(x[0, ..., 1:], -1.0)
    grey = kj.preprocess(np.full((8, 8), 128, np.uint8), cfg, size=8)
    assert np.all(grey[..., 0] == grey[..., 2])
