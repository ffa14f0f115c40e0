"""Does the data path keep the train step fed? The step's rate on batches already in memory against its rate
when every batch comes from the real pipeline, fed the way `knifejax.fit` feeds it: the next step is dispatched
before the previous step's metrics are read, so the loader works while the device computes. `--placement`
chooses the pipeline, as `--data-placement` does for training: `host` (decode-once cache, the study's
augmentation in `--workers` grain processes, each batch sent to the device) or `device` (the decoded images
copied to the device once, each batch gathered and augmented there by jit).

Three measurements, each the median of `--repeats` blocks of `--steps` steps after a warm-up (compilation
excluded), in one process, alternated block by block so that a shared machine's noise hits them alike. Before
a timed block of the pipeline, as many batches as the workers can hold ready are consumed untimed, so that
the block measures what the workers produce rather than what they stored while another block ran:

1. in-memory: the jitted train step (Adam, uint8 in, normalised inside the step) on one fixed batch;
2. pipeline alone: batches drawn from `train_batches` with nothing consuming them (what the loader can give);
3. fed: the step consuming the pipeline's batches, as in `fit`.

For `device`, "pipeline alone" is the gather and augmentation on the device, the host's draws included, and no
batches are stored ahead, so one untimed batch leads each block.

The data path keeps up when fed / in-memory ≥ 0.95.

    python -m benchmarks.data_path --model efficientnet_b0 --image-size 224 --batch-size 32 --workers 1
    python -m benchmarks.data_path --model efficientnet_b0 --image-size 224 --batch-size 32 --placement device
    python -m benchmarks.data_path --json results.json   # also writes the numbers
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import tempfile
import time

import jax
import numpy as np

import knifejax as kj
from knifejax.atomic_write import write_text_atomically
from knifejax.data.cache import decode_source
from knifejax.data.device_batches import DeviceImages, device_train_batches
from knifejax.data.pipeline import train_batches
from knifejax.data.synthetic import SyntheticKnives
from knifejax.data.transforms import Augment
from knifejax.train.sharding import data_mesh
from knifejax.train.steps import init_state, make_train_step


def measure(args: argparse.Namespace) -> dict:
    source = SyntheticKnives(args.classes, images_per_class=args.per_class, size=args.image_size, split="train")
    with tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()
        data = decode_source(source, args.image_size, cache_dir=cache, workers=args.workers)
        prepare_s = time.perf_counter() - started
        return _measure(args, data, prepare_s)


class _Feed:
    """The batches of one placement: `stream` yields them, `to_step` makes one the step's (images, labels) on
    the device, `produce` waits until one is made (for "pipeline alone"), `stored` is how many it can hold ready."""

    def __init__(self, args: argparse.Namespace, data):
        feed = dict(augment_cfg=Augment(size=args.image_size), seed=0, epoch=0, end_epoch=10_000)
        indices = np.arange(len(data))
        self.place_seconds = 0.0
        if args.placement == "device":
            started = time.perf_counter()
            placed = DeviceImages.place(data, data_mesh())
            jax.block_until_ready(placed.images)
            self.place_seconds = time.perf_counter() - started
            self.stream = device_train_batches(placed, indices, args.batch_size, **feed)
            self.to_step, self.produce, self.stored = (lambda batch: batch), jax.block_until_ready, 0
        else:
            self.stream = train_batches(data, indices, args.batch_size, workers=args.workers, **feed)
            self.to_step = lambda batch: (jax.device_put(batch["images"]), jax.device_put(batch["labels"]))
            self.produce = lambda batch: np.asarray(batch["images"])
            # grain: 2 per worker in the output buffer, read-ahead inside each worker, 2 in the reader
            self.stored = 4 * max(args.workers, 1) + 7


def _measure(args: argparse.Namespace, data, prepare_s: float) -> dict:
    model = kj.create_model(args.model, num_classes=args.classes)
    optimizer = kj.make_optimizer("adam", 1e-4)
    graphdef, state = init_state(model, optimizer)
    cfg = model.pretrained_cfg
    step = make_train_step(graphdef, optimizer, normalize=(tuple(cfg["mean"]), tuple(cfg["std"])),
                           precision=args.precision)
    feeder = _Feed(args, data)
    stream = feeder.stream
    images, labels = feeder.to_step(next(stream))

    started = time.perf_counter()
    state, metrics = step(state, images, labels)
    jax.block_until_ready(metrics["loss"])
    compile_s = time.perf_counter() - started

    # Each measurement runs `lead + steps` iterations back to back and returns the seconds of the last `steps`.
    def in_memory(steps: int, lead: int) -> float:
        nonlocal state
        pending = None
        for i in range(lead + steps):
            if i == lead:
                jax.block_until_ready(state)
                started = time.perf_counter()
            state, out = step(state, images, labels)
            if pending is not None:
                float(pending["loss"])  # as fit and `fed` below: the previous step's metrics read each step
            pending = out
        float(pending["loss"])
        return time.perf_counter() - started

    def pipeline_alone(steps: int, lead: int) -> float:
        for i, batch in enumerate(itertools.islice(stream, lead + steps)):
            if i == lead:
                started = time.perf_counter()
            feeder.produce(batch)
        return time.perf_counter() - started

    def fed(steps: int, lead: int) -> float:
        nonlocal state
        pending = None
        for i, batch in enumerate(itertools.islice(stream, lead + steps)):
            if i == lead:
                jax.block_until_ready(state)  # the lead's last step finishes untimed, as in `in_memory`
                started = time.perf_counter()
            state, out = step(state, *feeder.to_step(batch))
            if pending is not None:
                float(pending["loss"])  # fit reads the previous step's metrics after dispatching the next
            pending = out
        float(pending["loss"])
        return time.perf_counter() - started

    # More batches than the loader can hold ready: consumed untimed right before a timed block of the pipeline,
    # so that the block measures what the workers produce, not what they had stored while another block ran.
    buffered = feeder.stored + 1
    runs = {"in_memory": (in_memory, 1), "pipeline_alone": (pipeline_alone, buffered), "fed": (fed, buffered)}
    seconds = {name: [] for name in runs}
    try:
        for run, _ in runs.values():  # warm-up: workers started, caches filled
            run(1, 1)
        for _ in range(args.repeats):
            for name, (run, lead) in runs.items():
                seconds[name].append(run(args.steps, lead))
    finally:
        stream.close()  # stops the worker processes and frees their shared memory
    rates = {name: args.steps * args.batch_size / statistics.median(s) for name, s in seconds.items()}
    return {
        "model": args.model,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "precision": args.precision,
        "placement": args.placement,
        "workers": args.workers,
        "device": str(jax.devices()[0].device_kind),
        "backend": jax.default_backend(),
        "cores": os.cpu_count(),
        "images": len(data),
        "prepare_seconds": prepare_s,
        "place_on_device_seconds": feeder.place_seconds,
        "compile_seconds": compile_s,
        "img_s": rates,
        "fed_over_in_memory": rates["fed"] / rates["in_memory"],
        "block_seconds": seconds,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.data_path", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--model", default="efficientnet_b0")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--placement", choices=("host", "device"), default="host",
                   help="where the batches are made: grain workers on the host, or jit on the device")
    p.add_argument("--workers", type=int, default=1,
                   help="host placement: loader worker processes (0: threads in this process)")
    p.add_argument("--steps", type=int, default=4, help="steps per timed block")
    p.add_argument("--repeats", type=int, default=3, help="timed blocks per measurement (the median is reported)")
    p.add_argument("--classes", type=int, default=192, help="synthetic knife classes")
    p.add_argument("--per-class", type=int, default=2, help="synthetic training images per class")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    result = measure(args)
    rates = result["img_s"]
    fed_by = "device placement" if args.placement == "device" else f"{args.workers} worker(s)"
    print(f"{args.model}, {args.image_size} px, batch {args.batch_size}, {args.precision}, {fed_by}, "
          f"{result['backend']} ({result['device']}), compile {result['compile_seconds']:.1f} s")  # fmt: skip
    for name, rate in rates.items():
        print(f"  {name:15s} {rate:9.1f} img/s")
    print(f"  fed / in-memory: {result['fed_over_in_memory']:.3f} (target >= 0.95)")
    if args.json:
        write_text_atomically(args.json, json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
