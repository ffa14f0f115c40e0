"""Where should the train-time augmentation run: on the host in data-loader workers, or on the device in jit?

The study's augmentation (`knifejax.data.transforms`) is PIL-based and pixel-equal to torchvision: brightness
jitter, rotation by an angle in [0°, 180°) with nearest-neighbour sampling and black fill, vertical and
horizontal flips. It runs per image in the loader's worker processes, beside the train step. The
alternative is a jit + vmap version of the same ops on the uint8 batch, run by the device before the step.
This script measures what decides it, each a median over repeats after a warm-up (the two augmentations
timed in alternation, so that the noise of a shared machine hits them alike):

1. host: seconds per image of `augment` on images already resized to the model's size (as a decode-once
   cache of resized images gives them), in one process: the cost per worker core;
2. device: seconds per image of `knifejax.data.device_augment.augment_batch`, the same ops under jit + vmap
   (what `--data-placement device` runs), with each sample's parameters drawn on the host as arrays (the very
   draws `augment` makes), and how close its pixels are to PIL's over a few batches of draws;
3. what both compete with: a train step (adam, 192 classes, uint8 in, normalised inside the jit) of
   tf_efficientnet_lite0 and efficientnet_b0, seconds per image. From it: how many host cores keep up with
   the step, and the device augmentation's time as a fraction of the step's on the same device.

The device augmentation is timed on its own rather than fused into the step's jit: on a CPU it is a small
fraction of a percent of the step, far below the step's run-to-run noise, so a fused timing shows only noise.
Everything runs on JAX's default backend; the images are synthetic knives.

    python -m benchmarks.augment_placement [--batch-size 32] [--image-size 224] [--repeats 7] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import knifejax
from knifejax.atomic_write import write_text_atomically
from knifejax.data.device_augment import augment_batch, draw_arrays
from knifejax.data.synthetic import NUM_CLASSES, render_knife
from knifejax.data.transforms import Augment, augment
from knifejax.train.steps import init_state, make_train_step

MODELS = ("tf_efficientnet_lite0", "efficientnet_b0")
SEED = 0


def host_augment(images: np.ndarray, cfg: Augment, epoch: int) -> np.ndarray:
    """The loader's way: `augment` image by image, image i drawing as sample i of `epoch`."""
    return np.stack([augment(image, cfg, SEED, epoch, index) for index, image in enumerate(images)])


def medians(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each run, after one warm-up call each, the runs called in alternation."""
    for run in runs.values():
        run()
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(seconds) for name, seconds in times.items()}


def agreement(images: np.ndarray, cfg: Augment, epochs: int = 3) -> dict[str, float]:
    """Device vs PIL over `epochs` draws of each image: pixels (all channels) equal, channel max abs diff."""
    equal, max_diff = [], 0
    for epoch in range(epochs):
        ours = np.asarray(augment_batch(images, draw_arrays(cfg, SEED, epoch, np.arange(len(images)))))
        diff = np.abs(ours.astype(np.int16) - host_augment(images, cfg, epoch)).max(axis=-1)
        equal.append(float((diff == 0).mean()))
        max_diff = max(max_diff, int(diff.max()))
    pixels = images.shape[1] * images.shape[2]
    return {
        "pixels_equal": float(np.mean(equal)),
        "differing_pixels_per_image": (1 - float(np.mean(equal))) * pixels,
        "max_abs_diff": max_diff,
    }


def step_seconds(name: str, images: jax.Array, repeats: int) -> float:
    """Median seconds of one train step (adam, 192 classes) on a uint8 batch, normalised inside the jit
    as the loader hands over uint8."""
    optimizer = optax.adam(1e-4)
    graphdef, state = init_state(knifejax.create_model(name, num_classes=192, seed=0), optimizer)
    train_step = make_train_step(graphdef, optimizer)
    cfg = knifejax.get_pretrained_cfg(name)
    mean, std = jnp.asarray(cfg["mean"]) * 255, jnp.asarray(cfg["std"]) * 255
    step = jax.jit(lambda s, x, y: train_step(s, (x.astype(jnp.float32) - mean) / std, y), donate_argnums=0)
    labels = jnp.arange(len(images)) % 192

    def run():
        nonlocal state
        state, metrics = step(state, images, labels)
        jax.block_until_ready((state, metrics))

    return medians({name: run}, repeats)[name]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats of the augmentations")
    parser.add_argument("--step-repeats", type=int, default=2, help="timed repeats of each train step")
    parser.add_argument("--json", help="write the numbers here")
    args = parser.parse_args()

    batch, cfg = args.batch_size, Augment(size=args.image_size)
    images = np.stack([render_knife(i % NUM_CLASSES, i, size=args.image_size, seed=SEED) for i in range(batch)])
    raw, params = jnp.asarray(images), jax.tree.map(jnp.asarray, draw_arrays(cfg, SEED, 0, np.arange(batch)))
    aug = medians(
        {
            "host_augment": lambda: host_augment(images, cfg, 0),
            "device_augment": lambda: augment_batch(raw, params).block_until_ready(),
        },
        args.repeats,
    )
    per_image = {what: seconds / batch for what, seconds in aug.items()}
    augmented = jnp.asarray(host_augment(images, cfg, 0))
    steps = {}
    for name in MODELS:
        step = step_seconds(name, augmented, args.step_repeats) / batch
        steps[name] = {
            "step_s_per_image": step,
            "host_cores_to_keep_up": per_image["host_augment"] / step,
            "device_augment_fraction_of_step": per_image["device_augment"] / step,
        }
    result = {
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0]),
        "batch_size": batch,
        "image_size": args.image_size,
        "repeats": args.repeats,
        "step_repeats": args.step_repeats,
        "s_per_image": per_image,
        "device_vs_pil": agreement(images, cfg),
        "train_step": steps,
    }

    print(f"{result['backend']} ({result['device']}), batch {batch}, {args.image_size} px, medians")
    print(f"{'':40}{'ms/img':>10}{'img/s':>10}")
    rows = {"host augment, PIL, one process": per_image["host_augment"]}
    rows["device augment, jit + vmap"] = per_image["device_augment"]
    rows.update({f"train step, {name}": s["step_s_per_image"] for name, s in steps.items()})
    for what, seconds in rows.items():
        print(f"{what:40}{seconds * 1e3:10.3f}{1 / seconds:10.1f}")
    print(f"\n{'':40}{'host cores to keep up':>22}{'device aug / step':>19}")
    for name, s in steps.items():
        print(f"{name:40}{s['host_cores_to_keep_up']:22.4f}{s['device_augment_fraction_of_step']:19.4%}")
    agree = result["device_vs_pil"]
    print(
        f"\ndevice vs PIL over {3 * batch} draws: {agree['pixels_equal']:.4%} of pixels equal "
        f"({agree['differing_pixels_per_image']:.1f} per image differ), max abs diff {agree['max_abs_diff']}"
    )
    if args.json:
        write_text_atomically(args.json, json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
