"""Comparison helpers for parity tests."""

import numpy as np


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
