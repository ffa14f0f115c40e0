"""The decode-once cache and the grain batches: exact, deterministic in (seed, epoch, index), resumable at
any batch, the same with worker processes, and split over processes without overlap."""

import numpy as np
import pytest
from PIL import Image

from knifejax.data import ImageFolderSource, SyntheticKnives
from knifejax.data.cache import checksums_path, decode_source, resize_square
from knifejax.data.pipeline import epoch_order, eval_batches, train_batches
from knifejax.data.transforms import Augment

AUG = Augment(size=24)


@pytest.fixture(scope="module")
def decoded():
    return decode_source(SyntheticKnives(5, 4, size=24), 24, cache_dir=None)


def _folder(tmp_path, sizes):
    for c, (w, h) in enumerate(sizes):
        (tmp_path / f"class_{c}").mkdir(parents=True)
        pixels = np.random.default_rng(c).integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"class_{c}" / "a.png")
    return ImageFolderSource(tmp_path)


def test_cache_holds_the_resized_images_and_is_reused_until_a_file_changes(tmp_path):
    source = _folder(tmp_path / "data", [(40, 30), (17, 50)])
    first = decode_source(source, 16, cache_dir=tmp_path / "cache")
    for i in range(len(source)):
        expected = np.asarray(Image.fromarray(source[i]["image"]).resize((16, 16), Image.Resampling.BILINEAR))
        np.testing.assert_array_equal(first.read(i), expected)
    # the cache and its checksums, no partial file left
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted([first.path.name, checksums_path(first.path).name])

    again = decode_source(source, 16, cache_dir=tmp_path / "cache")
    assert again.path == first.path

    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(source.paths[0])
    changed = decode_source(ImageFolderSource(tmp_path / "data"), 16, cache_dir=tmp_path / "cache")
    assert changed.path != first.path
    assert changed.images[0].max() == 0


@pytest.mark.parametrize("height,width", [(8, 12), (12, 8), (5, 5), (8, 8)])
def test_resize_square_is_bilinear_to_size_by_size_whatever_the_shape(height, width):
    # an image with one side already at the size (8 x 12 to 8) must still be resized; one at size is kept
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(image).resize((8, 8), Image.Resampling.BILINEAR))
    out = resize_square(image, 8)
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)


def test_an_epoch_visits_each_item_at_most_once_in_a_seeded_order(decoded):
    idx = np.arange(len(decoded))
    batches = list(train_batches(decoded, idx, 6, augment_cfg=None, seed=3, epoch=0))
    assert len(batches) == len(idx) // 6
    images = np.concatenate([b["images"] for b in batches])
    labels = np.concatenate([b["labels"] for b in batches])
    order = epoch_order(len(idx), 3, 0)[: len(labels)]
    np.testing.assert_array_equal(images, decoded.images[order])
    np.testing.assert_array_equal(labels, decoded.labels[order])
    assert not np.array_equal(epoch_order(len(idx), 3, 0), epoch_order(len(idx), 3, 1))


def test_batches_repeat_exactly_and_resume_at_any_batch(decoded):
    idx = np.arange(len(decoded))
    full = list(train_batches(decoded, idx, 4, augment_cfg=AUG, seed=1, epoch=2))
    again = list(train_batches(decoded, idx, 4, augment_cfg=AUG, seed=1, epoch=2, start_batch=3))
    for a, b in zip(full[3:], again, strict=True):
        np.testing.assert_array_equal(a["images"], b["images"])
        np.testing.assert_array_equal(a["labels"], b["labels"])
    other_epoch = next(train_batches(decoded, idx, 4, augment_cfg=AUG, seed=1, epoch=3))
    assert not np.array_equal(full[0]["images"], other_epoch["images"])


def test_one_stream_spans_epochs_from_any_resume_point(decoded):
    idx = np.arange(len(decoded))
    stream = list(train_batches(decoded, idx, 4, augment_cfg=AUG, seed=1, epoch=1, start_batch=2, end_epoch=3))
    expected = [
        *list(train_batches(decoded, idx, 4, augment_cfg=AUG, seed=1, epoch=1))[2:],
        *train_batches(decoded, idx, 4, augment_cfg=AUG, seed=1, epoch=2),
    ]
    assert len(stream) == len(expected) == 5 - 2 + 5
    for a, b in zip(stream, expected):
        np.testing.assert_array_equal(a["images"], b["images"])


@pytest.mark.slow  # starts worker processes
def test_worker_processes_give_the_same_batches(decoded):
    idx = np.arange(len(decoded))
    inline = list(train_batches(decoded, idx, 4, augment_cfg=AUG, seed=0, epoch=0))
    workers = list(train_batches(decoded, idx, 4, augment_cfg=AUG, seed=0, epoch=0, workers=2))
    for a, b in zip(inline, workers, strict=True):
        np.testing.assert_array_equal(a["images"], b["images"])


def test_processes_load_disjoint_rows_of_each_global_batch(decoded):
    idx = np.arange(len(decoded))
    whole = next(train_batches(decoded, idx, 4, augment_cfg=AUG, seed=0, epoch=0))
    parts = [next(train_batches(decoded, idx, 4, augment_cfg=AUG, seed=0, epoch=0, process_index=p, process_count=2))
             for p in range(2)]  # fmt: skip
    np.testing.assert_array_equal(np.concatenate([p["images"] for p in parts]), whole["images"])
    with pytest.raises(ValueError, match="divisible"):
        train_batches(decoded, idx, 5, augment_cfg=None, seed=0, epoch=0, process_count=2)


def test_eval_batches_keep_every_item_in_order_and_pad_the_last(decoded):
    idx = np.arange(7)
    batches = list(eval_batches(decoded, idx, 3))
    assert [int(b["valid"]) for b in batches] == [3, 3, 1]
    assert all(b["images"].shape[0] == 3 for b in batches)
    images = np.concatenate([b["images"][: int(b["valid"])] for b in batches])
    np.testing.assert_array_equal(images, decoded.images[:7])
