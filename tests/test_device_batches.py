"""Batches made on the device equal the host pipeline's, bit for bit: the same items in the same order, the same
augmentation draws, across epochs and from a resume point; evaluation batches too."""

import itertools

import numpy as np
import pytest

from knifejax.data import SyntheticKnives
from knifejax.data.cache import decode_source
from knifejax.data.device_batches import DeviceImages, device_bytes, device_eval_batches, device_train_batches
from knifejax.data.pipeline import eval_batches, train_batches
from knifejax.data.transforms import Augment
from knifejax.train.sharding import data_mesh


@pytest.fixture(scope="module")
def decoded():
    return decode_source(SyntheticKnives(5, 4, size=24), 24, cache_dir=None)


@pytest.mark.parametrize("augment_cfg", [Augment(size=24), None], ids=["study's augmentation", "none"])
def test_device_train_batches_equal_the_host_pipelines(decoded, augment_cfg):
    placed = DeviceImages.place(decoded, data_mesh())
    indices = np.arange(1, len(decoded), 2)  # a subset, as a carved validation split leaves
    feed = dict(augment_cfg=augment_cfg, seed=4, epoch=1, start_batch=1, end_epoch=3)  # resumed mid-epoch, 2 epochs
    host = list(train_batches(decoded, indices, 4, **feed))
    device = list(device_train_batches(placed, indices, 4, **feed))
    assert len(device) == len(host) == 1 + 2  # the rest of epoch 1, then all of epoch 2
    for (images, labels), batch in zip(device, host, strict=True):
        np.testing.assert_array_equal(np.asarray(images), batch["images"])
        np.testing.assert_array_equal(np.asarray(labels), batch["labels"])
        assert images.dtype == np.uint8 and labels.dtype == np.int32


def test_device_eval_batches_equal_the_host_pipelines(decoded):
    placed = DeviceImages.place(decoded, data_mesh())
    indices = np.arange(len(decoded))[::-1][:7]
    pairs = itertools.zip_longest(device_eval_batches(placed, indices, 4), eval_batches(decoded, indices, 4))
    for (images, valid), batch in pairs:
        np.testing.assert_array_equal(np.asarray(images), batch["images"])
        assert valid == int(batch["valid"])
    assert placed.nbytes == device_bytes(decoded)
