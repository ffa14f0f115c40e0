"""Batches for training and evaluation on grain, from a decode-once cache (`knifejax.data.cache`).

Everything random is a function of (seed, epoch, index): the epoch's order is a permutation drawn from
(seed, epoch), and each image's augmentation from (seed, epoch, dataset index). So batch b of epoch e is
the same whatever the number of workers or processes, and a resumed run restarts at (epoch, batch)
without any iterator state to restore.

Training batches are all full (the last partial batch of an epoch is dropped, as timm's train loader
does), so the train step compiles once. Evaluation batches keep every item: the last one is padded by
repeating its final item, and `valid` says how many rows are real.

Batches hold uint8 images; normalisation happens on the device, inside the jit-compiled step, so a
quarter of the bytes cross to the accelerator. Several processes (`jax.distributed`) each load only their
rows of each global batch: rows `[p * B / P, (p + 1) * B / P)` for process p of P.
"""

from __future__ import annotations

from collections.abc import Iterator

import grain
import numpy as np

from knifejax.data.cache import DecodedImages
from knifejax.data.transforms import Augment, augment
from knifejax.data.workers import allow_grain_workers


def epoch_order(num_items: int, seed: int, epoch: int) -> np.ndarray:
    """The order in which epoch `epoch` visits items 0..num_items-1."""
    return np.random.default_rng([seed, epoch]).permutation(num_items)


def train_steps_per_epoch(num_items: int, batch_size: int) -> int:
    return num_items // batch_size


def train_items(order: np.ndarray, indices: np.ndarray, batch: int, batch_size: int, rows: tuple[int, int]) -> np.ndarray:
    """The dataset indices of this process's `rows` of training batch `batch`, in an epoch visiting `indices`
    in `order` (`epoch_order`): one definition for the host and the device placements."""
    start, stop = rows
    return indices[order[batch * batch_size + start : batch * batch_size + stop]]


def eval_items(indices: np.ndarray, batch: int, batch_size: int, rows: tuple[int, int]) -> tuple[np.ndarray, int]:
    """The dataset indices of this process's `rows` of evaluation batch `batch` (the last batch padded by
    repeating its final item), and how many items of the whole batch are real."""
    items = indices[batch * batch_size : (batch + 1) * batch_size]
    valid = len(items)
    items = np.concatenate([items, np.repeat(items[-1:], batch_size - valid)])
    return items[rows[0] : rows[1]], valid


def process_rows(batch_size: int, process_index: int, process_count: int) -> tuple[int, int]:
    """The rows of each global batch that process `process_index` of `process_count` loads."""
    if batch_size % process_count:
        raise ValueError(f"batch size {batch_size} must be divisible by the {process_count} processes")
    per = batch_size // process_count
    return process_index * per, (process_index + 1) * per


def check_fills_a_batch(num_items: int, batch_size: int) -> int:
    """The training steps per epoch, refusing a set too small for one batch."""
    steps = train_steps_per_epoch(num_items, batch_size)
    if steps == 0:
        raise ValueError(f"{num_items} training images cannot fill one batch of {batch_size}; lower the batch size")
    return steps


class _TrainBatch:
    """Picklable `global batch number -> batch` (epoch = number // steps per epoch), for grain workers."""

    def __init__(self, data, indices, batch_size, rows, cfg, seed):
        self.data, self.indices, self.batch_size, self.rows = data, indices, batch_size, rows
        self.cfg, self.seed = cfg, seed
        self.steps = train_steps_per_epoch(len(indices), batch_size)
        self._order: tuple[int, np.ndarray] | None = None

    def order(self, epoch: int) -> np.ndarray:
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, epoch_order(len(self.indices), self.seed, epoch))
        return self._order[1]

    def __call__(self, number: int) -> dict[str, np.ndarray]:
        epoch, batch = divmod(number, self.steps)
        items = train_items(self.order(epoch), self.indices, batch, self.batch_size, self.rows)
        ranks = np.argsort(np.argsort(items))
        images = self.data.read(np.sort(items))[ranks]  # one forward pass over the memory map, checked
        if self.cfg is not None:
            images = np.stack([augment(im, self.cfg, self.seed, epoch, int(i)) for im, i in zip(images, items)])
        return {"images": images, "labels": self.data.labels[items].astype(np.int32)}


def _iterate(dataset: grain.MapDataset, workers: int) -> Iterator[dict[str, np.ndarray]]:
    iterable = dataset.to_iter_dataset(grain.ReadOptions(num_threads=0 if workers else 2, prefetch_buffer_size=2))
    if workers > 0:
        allow_grain_workers()
        iterable = iterable.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=2))
    return iter(iterable)


def train_batches(
    data: DecodedImages,
    indices: np.ndarray,
    batch_size: int,
    *,
    augment_cfg: Augment | None,
    seed: int,
    epoch: int,
    start_batch: int = 0,
    end_epoch: int | None = None,
    workers: int = 0,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
    """The training batches over the items `indices` of `data`, from batch `start_batch` of `epoch` to the
    end of epoch `end_epoch - 1` (default: the end of `epoch`), in one stream, so worker processes start once.

    Each is `{"images": uint8 (b, S, S, 3), "labels": int32 (b,)}` with b = batch_size / process_count.
    `augment_cfg=None` trains on the resized images as they are.
    """
    indices = np.asarray(indices, np.int64)
    steps = check_fills_a_batch(len(indices), batch_size)
    rows = process_rows(batch_size, process_index, process_count)
    make = _TrainBatch(data, indices, batch_size, rows, augment_cfg, seed)
    end_epoch = epoch + 1 if end_epoch is None else end_epoch
    return _iterate(grain.MapDataset.range(epoch * steps + start_batch, end_epoch * steps).map(make), workers)


class _EvalBatch:
    def __init__(self, data, indices, batch_size, rows):
        self.data, self.indices, self.batch_size, self.rows = data, indices, batch_size, rows

    def __call__(self, batch: int) -> dict[str, np.ndarray]:
        items, valid = eval_items(self.indices, batch, self.batch_size, self.rows)
        return {
            "images": np.asarray(self.data.read(items)),
            "labels": self.data.labels[items].astype(np.int32),
            "valid": np.asarray(valid),
        }


def eval_batches(
    data: DecodedImages,
    indices: np.ndarray,
    batch_size: int,
    *,
    workers: int = 0,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
    """Every item of `indices`, in order, in batches of `batch_size` (the last padded; see `valid`)."""
    indices = np.asarray(indices, np.int64)
    steps = -(-len(indices) // batch_size)
    make = _EvalBatch(data, indices, batch_size, process_rows(batch_size, process_index, process_count))
    return _iterate(grain.MapDataset.range(steps).map(make), workers)
