"""Comparison helpers for parity tests."""

import numpy as np

# A ViT's blocks are one block repeated: two of them (timm's `depth` keyword, given to both sides) hold all of its
# math, and compile in a fraction of twelve's time (ViT-Tiny's float64 train step: 2.6 s against 10).
TWO_BLOCKS = {"depth": 2}

# A ResNet stage is its first block then copies of one block: one stage of two blocks and one block in each other
# stage (timm's `layers` keyword, given to both sides) hold every kind of block — projection and identity shortcuts,
# strides 1 and 2 — in 5 blocks instead of 8 (ResNet-18, SKResNet-18) or 16 (ResNet-50).
FEWER_BLOCKS = {"layers": (1, 2, 1, 1)}


def relative_error(ours, theirs) -> float:
    """max |ours - theirs| / max |theirs|."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    return float(np.max(np.abs(ours - theirs)) / max(np.max(np.abs(theirs)), 1e-30))


def size_kwargs(name: str, height: int, width: int) -> dict:
    """Keywords that let `name` take (height, width) inputs: ViTs are built for one input size, CNNs take any."""
    return {"img_size": (height, width)} if name.startswith("vit_") else {}


def channels_last(t) -> np.ndarray:
    """A timm output as knifejax lays it out: feature maps NCHW -> NHWC; tokens and vectors unchanged."""
    return (t.permute(0, 2, 3, 1) if t.ndim == 4 else t).numpy()
