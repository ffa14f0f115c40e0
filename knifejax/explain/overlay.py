"""Grad-CAM maps drawn on their images: one overlay per image, and labelled grids of them.

The blend is pytorch-grad-cam's `show_cam_on_image`: a jet heat map (matplotlib's, which differs from OpenCV's in
the last few levels of colour) mixed half and half with the image, then scaled so the brightest channel is 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def denormalize(x, mean, std) -> np.ndarray:
    """Normalised NHWC (or HWC) floats back to uint8 RGB: x * std + mean, clipped to [0, 1], times 255."""
    image = np.asarray(x, np.float32) * np.asarray(std, np.float32) + np.asarray(mean, np.float32)
    return np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)


def overlay(image, cam, image_weight: float = 0.5, colormap: str = "jet") -> np.ndarray:
    """uint8 RGB image (H, W, 3) with a map (H, W) in [0, 1] blended over it; returns uint8 (H, W, 3)."""
    from matplotlib import colormaps

    image = np.asarray(image)
    cam = np.asarray(cam, np.float32)
    if image.shape[:2] != cam.shape:
        raise ValueError(f"image {image.shape[:2]} and map {cam.shape} differ in size; resize the map to the image")
    if not 0.0 <= image_weight <= 1.0:
        raise ValueError(f"image_weight must be in [0, 1], got {image_weight}")
    heat = colormaps[colormap](np.uint8(255 * np.clip(cam, 0.0, 1.0)))[..., :3].astype(np.float32)
    blended = (1.0 - image_weight) * heat + image_weight * image.astype(np.float32) / 255.0
    return np.uint8(255 * blended / blended.max())


def plot_grid(
    images: Sequence[np.ndarray],
    cams: Sequence[np.ndarray],
    titles: Sequence[str],
    path: str | Path,
    *,
    columns: int = 4,
    title: str | None = None,
    title_colors: Sequence[str] | None = None,
) -> Path:
    """Write a grid of image | overlay pairs, one titled cell per image (e.g. "true: X\\npred: Y (0.83)"), to a PNG."""
    from matplotlib.figure import Figure

    from knifejax.plots import save_figure

    count = len(images)
    if not count or not len(cams) == len(titles) == count:
        raise ValueError(f"plot_grid needs as many maps and titles as images (got {count}, {len(cams)}, {len(titles)})")
    columns = min(columns, count)
    rows = -(-count // columns)
    fig = Figure(figsize=(2 * columns * 1.9, rows * 2.3))
    axes = fig.subplots(rows, 2 * columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (image, cam, label) in enumerate(zip(images, cams, titles)):
        left, right = axes[i // columns, 2 * (i % columns)], axes[i // columns, 2 * (i % columns) + 1]
        left.imshow(image)
        right.imshow(overlay(image, cam))
        color = title_colors[i] if title_colors else "black"
        left.set_title(label, fontsize=8, loc="left", color=color)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, path)
