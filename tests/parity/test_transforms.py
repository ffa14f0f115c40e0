"""The augmentations give torchvision's pixels (PIL backend) for the same random draw, and repeat exactly."""

import numpy as np
import pytest
from PIL import Image

from knifejax.data.transforms import Augment, AugmentParams, apply, augment, draw_params, rng_for


@pytest.fixture
def photo():
    from skimage import data

    return data.astronaut()[::2, ::2].copy()  # 256x256 RGB, detailed and colourful


def _torchvision(image, params, size):
    from torchvision.transforms import functional as F

    out = F.resize(Image.fromarray(image), [size, size])
    jitters = {"brightness": F.adjust_brightness, "contrast": F.adjust_contrast,
               "saturation": F.adjust_saturation, "hue": F.adjust_hue}
    for name, factor in params.jitter:
        out = jitters[name](out, factor)
    out = F.rotate(out, params.angle)
    if params.vflip:
        out = F.vflip(out)
    if params.hflip:
        out = F.hflip(out)
    return np.asarray(out)


@pytest.mark.parametrize(
    "params",
    [
        AugmentParams((), 0.0, False, False),
        AugmentParams((("brightness", 1.17),), 0.0, False, False),
        AugmentParams((("brightness", 0.83),), 37.5, True, False),
        AugmentParams((), 133.0, False, True),
        AugmentParams((("contrast", 1.2), ("saturation", 0.8), ("hue", -0.07)), 90.0, True, True),
    ],
)
def test_apply_equals_torchvision_for_the_same_draw(timm, photo, params):
    ours = apply(Image.fromarray(photo), params, 160)
    theirs = _torchvision(photo, params, 160)
    assert ours.shape == theirs.shape == (160, 160, 3)
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1


def test_draws_follow_the_study_ranges():
    cfg = Augment()
    draws = [draw_params(rng_for(0, 0, i), cfg) for i in range(2000)]
    angles = np.array([d.angle for d in draws])
    factors = np.array([d.jitter[0][1] for d in draws])
    assert 0 <= angles.min() and angles.max() <= 180 and angles.mean() == pytest.approx(90, abs=5)
    assert 0.8 <= factors.min() and factors.max() <= 1.2
    assert np.mean([d.hflip for d in draws]) == pytest.approx(0.5, abs=0.05)
    assert np.mean([d.vflip for d in draws]) == pytest.approx(0.5, abs=0.05)
    assert all(len(d.jitter) == 1 and d.jitter[0][0] == "brightness" for d in draws)


def test_augment_is_a_function_of_seed_epoch_index(photo):
    cfg = Augment(size=64, contrast=0.2, hue=0.1)
    first = augment(photo, cfg, seed=1, epoch=2, index=3)
    assert np.array_equal(first, augment(photo, cfg, seed=1, epoch=2, index=3))
    assert not np.array_equal(first, augment(photo, cfg, seed=1, epoch=3, index=3))
    assert not np.array_equal(first, augment(photo, cfg, seed=2, epoch=2, index=3))
