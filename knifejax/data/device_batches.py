"""Batches from decoded images kept on the device(s): the `device` data placement.

The decode-once cache (`knifejax.data.cache`) is copied to the accelerators once, as uint8, whole on every
device of the mesh. Each step the host sends only the batch's dataset indices and its augmentation draws
(`knifejax.data.device_augment.draw_arrays`), split over the devices like the batch; every device then
gathers and augments its own rows from its own copy, with no traffic between devices. The indices are those
of the host path (`knifejax.data.pipeline.train_items`, `eval_items`), the draws the host's draws, so both
placements give the train and eval steps the same uint8 batches, bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from knifejax.data.cache import DecodedImages
from knifejax.data.device_augment import augment_batch, draw_arrays
from knifejax.data.pipeline import check_fills_a_batch, epoch_order, eval_items, process_rows, train_items
from knifejax.data.transforms import Augment
from knifejax.train.sharding import DATA_AXIS, replicate, shard_batch


@dataclass(frozen=True)
class DeviceImages:
    """Decoded images and their labels, whole on every device of `mesh`."""

    images: jax.Array  # uint8 (N, S, S, 3)
    labels: jax.Array  # int32 (N,)
    mesh: Mesh

    @classmethod
    def place(cls, data: DecodedImages, mesh: Mesh) -> DeviceImages:
        """Read once through `DecodedImages.read`, so every image's checksum is checked in the copy's own pass."""
        images, labels = replicate((data.read(slice(None)), data.labels.astype(np.int32)), mesh)
        return cls(images, labels, mesh)

    @property
    def nbytes(self) -> int:
        """Bytes on each device."""
        return self.images.nbytes + self.labels.nbytes


def device_bytes(data: DecodedImages) -> int:
    """What `DeviceImages.place(data)` puts on each device, before placing it."""
    return len(data) * (data.size * data.size * 3 + np.dtype(np.int32).itemsize)


def _gather(images: jax.Array, labels: jax.Array, items: jax.Array) -> tuple[jax.Array, jax.Array]:
    return images[items], labels[items]


def _gather_augmented(images, labels, items, params) -> tuple[jax.Array, jax.Array]:
    batch, batch_labels = _gather(images, labels, items)
    return augment_batch(batch, params), batch_labels


@lru_cache(maxsize=None)
def _batch_function(mesh: Mesh, augmented: bool):
    """The jitted gather (and augmentation) of one batch, its outputs split over "data" as a host batch would be."""
    split = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
    return jax.jit(_gather_augmented if augmented else _gather, out_shardings=(split, split))


def device_train_batches(
    placed: DeviceImages,
    indices: np.ndarray,
    batch_size: int,
    *,
    augment_cfg: Augment | None,
    seed: int,
    epoch: int,
    start_batch: int = 0,
    end_epoch: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[tuple[jax.Array, jax.Array]]:
    """As `knifejax.data.pipeline.train_batches`, but each batch is made on the devices: yields (uint8 images,
    int32 labels) as global arrays split over the mesh's "data" axis, ready for the train step."""
    indices = np.asarray(indices, np.int64)
    steps = check_fills_a_batch(len(indices), batch_size)
    rows = process_rows(batch_size, process_index, process_count)
    end_epoch = epoch + 1 if end_epoch is None else end_epoch
    make = _batch_function(placed.mesh, augment_cfg is not None)
    order = None
    for number in range(epoch * steps + start_batch, end_epoch * steps):
        batch_epoch, batch = divmod(number, steps)
        if order is None or order[0] != batch_epoch:
            order = (batch_epoch, epoch_order(len(indices), seed, batch_epoch))
        items = train_items(order[1], indices, batch, batch_size, rows)
        local = {"items": items.astype(np.int32)}
        if augment_cfg is not None:
            local["params"] = draw_arrays(augment_cfg, seed, batch_epoch, items)
        sent = shard_batch(local, placed.mesh)
        yield make(placed.images, placed.labels, sent["items"], *([sent["params"]] if augment_cfg is not None else []))


def device_eval_batches(
    placed: DeviceImages, indices: np.ndarray, batch_size: int, *, process_index: int = 0, process_count: int = 1
) -> Iterator[tuple[jax.Array, int]]:
    """As `knifejax.data.pipeline.eval_batches` on the devices: yields (uint8 images split over "data", how many
    rows of the batch are real)."""
    indices = np.asarray(indices, np.int64)
    rows = process_rows(batch_size, process_index, process_count)
    make = _batch_function(placed.mesh, augmented=False)
    for batch in range(-(-len(indices) // batch_size)):
        items, valid = eval_items(indices, batch, batch_size, rows)
        images, _ = make(placed.images, placed.labels, shard_batch(items.astype(np.int32), placed.mesh))
        yield images, valid
