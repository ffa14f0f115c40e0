"""`predict`: a jit-compiled forward pass over every item of a split, the one path by which training's
validation and test, `Predictor` and ensembles turn images into outputs (`knifejax.metrics.evaluation_metrics`
then turns logits into metrics)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from knifejax.data.device_batches import DeviceImages, device_eval_batches
from knifejax.data.pipeline import eval_batches
from knifejax.data.split import Split
from knifejax.train.sharding import check_batch_size, data_mesh, shard_batch, to_host


def predict(
    forward: Callable[[jax.Array], Any],
    split: Split,
    batch_size: int,
    mesh: Mesh | None = None,
    placed: DeviceImages | None = None,
) -> Any:
    """`forward` (uint8 images (B, S, S, 3) -> a pytree of (B, ...) arrays) of every item of `split`, in order,
    as the same pytree of numpy arrays (len(split), ...).

    Batches are split over `mesh` (default: every device); an empty split gives empty arrays of the shapes
    `forward` would return. Decoded images need no loader workers: a batch is one read of the cache, or, with
    `placed` (`split.data` on the devices of `mesh`), one gather on the devices.
    """
    mesh = data_mesh() if mesh is None else mesh
    check_batch_size(batch_size, mesh)
    processes = dict(process_index=jax.process_index(), process_count=jax.process_count())
    if placed is None:
        batches = ((shard_batch(b["images"], mesh), int(b["valid"]))
                   for b in eval_batches(split.data, split.indices, batch_size, **processes))  # fmt: skip
    else:
        batches = device_eval_batches(placed, split.indices, batch_size, **processes)
    outputs = []
    for images, valid in batches:
        outputs.append(jax.tree.map(lambda x: to_host(x)[:valid], forward(images)))
    if not outputs:
        size = split.data.size
        shapes = jax.eval_shape(forward, jax.ShapeDtypeStruct((1, size, size, 3), np.uint8))
        return jax.tree.map(lambda s: np.zeros((0, *s.shape[1:]), s.dtype), shapes)
    return jax.tree.map(lambda *parts: np.concatenate(parts), *outputs)
