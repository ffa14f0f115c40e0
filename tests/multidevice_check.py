"""Run by tests/test_multidevice.py in a child process with 4 forced CPU devices (the flag must be set
before JAX starts): the data-parallel step equals the one-device step, on a network that takes each XLA:CPU path
of the real ones (`tests.tiny_model.EveryCpuPath`)."""

import jax
import numpy as np
from flax import nnx

import knifejax as kj
from knifejax.data import SyntheticKnives
from knifejax.data.cache import decode_source
from knifejax.data.device_batches import DeviceImages, device_train_batches
from knifejax.data.pipeline import train_batches
from knifejax.data.transforms import Augment
from knifejax.train.sharding import data_mesh, replicate, shard_batch
from knifejax.train.steps import init_state, make_train_step
from tests.tiny_model import EveryCpuPath

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TOLERANCE = 1e-5  # relative; the 4-way split only reorders float32 sums (BatchNorm statistics, gradients)


def _state():
    model = EveryCpuPath(4, rngs=nnx.Rngs(0))
    optimizer = kj.make_optimizer("sgd", 0.05, momentum=0.9)
    graphdef, state = init_state(model, optimizer)
    return graphdef, optimizer, state


def _relative_gap(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def main() -> None:
    """Three SGD steps (momentum, BatchNorm in train mode) on one device and split over four: the same loss at each
    step and the same parameters and statistics after them. A gradient that differed would move the parameters."""
    assert jax.device_count() == 4, jax.devices()
    rng = np.random.default_rng(0)
    graphdef, optimizer, single = _state()
    mesh = data_mesh()
    multi = replicate(_state()[2], mesh)
    step = make_train_step(graphdef, optimizer, normalize=(MEAN, STD))
    loss_gaps = []
    for _ in range(3):
        batch = rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8), rng.integers(0, 4, 8).astype(np.int32)
        images, labels = shard_batch(batch, mesh)
        assert len(images.sharding.device_set) == 4
        single, one = step(single, *batch)
        multi, many = step(multi, images, labels)
        loss_gaps.append(_relative_gap(many["loss"], one["loss"]))
    assert max(loss_gaps) <= TOLERANCE, loss_gaps
    state_gaps = {}
    for kind in ("params", "rest"):
        gaps = [_relative_gap(m, s) for m, s in zip(jax.tree.leaves(getattr(multi, kind)), jax.tree.leaves(getattr(single, kind)))
                if not jax.dtypes.issubdtype(m.dtype, jax.dtypes.prng_key)]
        state_gaps[kind] = max(gaps)
        assert max(gaps) <= TOLERANCE, (kind, max(gaps))
    device_placement_equals_host(graphdef, optimizer, mesh)
    print(
        f"4 devices equal 1: loss gap {max(loss_gaps):.1e} over 3 SGD steps, after them params {state_gaps['params']:.1e}, "
        f"BatchNorm statistics {state_gaps['rest']:.1e}"
    )


def device_placement_equals_host(graphdef, optimizer, mesh) -> None:
    """Images whole on each of the 4 devices, each gathering and augmenting its own rows: the host pipeline's
    batches, split alike, and the same train steps bit for bit."""
    decoded = decode_source(SyntheticKnives(4, 4, size=32), 32, cache_dir=None)
    placed = DeviceImages.place(decoded, mesh)
    assert len(placed.images.sharding.device_set) == 4 and placed.images.sharding.is_fully_replicated
    feed = dict(augment_cfg=Augment(size=32), seed=1, epoch=0, end_epoch=2)
    step = make_train_step(graphdef, optimizer, normalize=(MEAN, STD))
    on_device, on_host = replicate(_state()[2], mesh), replicate(_state()[2], mesh)
    pairs = zip(device_train_batches(placed, np.arange(16), 8, **feed), train_batches(decoded, np.arange(16), 8, **feed),
                strict=True)  # fmt: skip
    for (images, labels), batch in pairs:
        assert images.sharding == shard_batch(batch["images"], mesh).sharding
        np.testing.assert_array_equal(np.asarray(images), batch["images"])
        on_device, _ = step(on_device, images, labels)
        on_host, _ = step(on_host, *shard_batch((batch["images"], batch["labels"]), mesh))
    for a, b in zip(jax.tree.leaves(on_device.params), jax.tree.leaves(on_host.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


if __name__ == "__main__":
    main()
