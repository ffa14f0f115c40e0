"""Data parallelism with `jax.sharding`: one code path for 1 CPU, 1 GPU, 8 GPUs or several hosts.

The mesh has one axis, "data". The training state is replicated; each batch is split along its first
dimension over "data". jit compiles the step for the global batch, so BatchNorm's mean and variance are
taken over the whole batch (XLA inserts the all-reduce), and gradients are the global batch's.

Several hosts: call `jax.distributed.initialize()` first (`--distributed` on the command line); every
process then loads only its rows of each global batch (`knifejax.data.pipeline`) and
`jax.make_array_from_process_local_data` assembles the global array.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from knifejax.errors import ConfigError

DATA_AXIS = "data"


def data_mesh(devices: list | None = None) -> Mesh:
    """A 1-D mesh over `devices` (default: every device of every process) named "data"."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    if batch_size % mesh.size:
        raise ConfigError(
            f"--batch-size {batch_size} must be divisible by the {mesh.size} devices it is split over; "
            f"use a multiple of {mesh.size}"
        )


def replicate(tree, mesh: Mesh):
    """Place every array of `tree` whole on every device of `mesh`."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def shard_batch(arrays, mesh: Mesh):
    """Assemble each process-local array (this process's rows) into a global array split over "data"."""
    sharding = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), arrays)


def to_host(x: jax.Array) -> np.ndarray:
    """A global array as one numpy array on every process."""
    if jax.process_count() == 1:
        return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
