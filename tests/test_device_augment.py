"""The device augmentation gives PIL's pixels exactly (`knifejax.data.transforms`), per operation and composed, at
odd sizes where the rotation's centre falls between pixels; no tolerance, since the device path must give the very
batches of the host path for runs to be bitwise equal."""

import numpy as np
import pytest

from knifejax.data.device_augment import augment_batch, draw_arrays, unsupported
from knifejax.data.transforms import Augment, augment

SEED = 3
DRAWS = 128  # per operation and size: 128 angles, brightness factors and flip pairs
OPERATIONS = {
    "brightness": dict(brightness=0.2, rotation=(0.0, 0.0), hflip=0.0, vflip=0.0),
    "rotation": dict(brightness=0.0, rotation=(0.0, 360.0), hflip=0.0, vflip=0.0),
    "vflip": dict(brightness=0.0, rotation=(0.0, 0.0), hflip=0.0, vflip=1.0),
    "hflip": dict(brightness=0.0, rotation=(0.0, 0.0), hflip=1.0, vflip=0.0),
    "composed (the study's)": dict(),
}


@pytest.mark.parametrize("size", [33, 46])
def test_device_augmentation_equals_pil_per_operation_and_composed(size):
    rng = np.random.default_rng(size)
    images = rng.integers(0, 256, (DRAWS, size, size, 3), dtype=np.uint8)
    images[:, size // 3, :] = 255  # bright lines, so that a rotation off by a pixel shows
    items = np.arange(DRAWS) * 7 + 1
    for name, settings in OPERATIONS.items():
        cfg = Augment(size=size, **settings)
        ours = np.asarray(augment_batch(images, draw_arrays(cfg, SEED, 2, items)))
        pil = np.stack([augment(image, cfg, SEED, 2, int(i)) for image, i in zip(images, items)])
        assert not np.array_equal(pil, images), name  # the operation did something
        differing = np.argwhere(ours != pil)
        assert len(differing) == 0, f"{name}: {len(differing)} channel values differ, first at {differing[:3]}"


def test_the_host_only_jitters_are_named_and_refused():
    cfg = Augment(size=8, contrast=0.1, hue=0.05)
    assert unsupported(cfg) == ["contrast", "hue"]
    with pytest.raises(ValueError, match="contrast, hue"):
        draw_arrays(cfg, 0, 0, np.arange(2))
