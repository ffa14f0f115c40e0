"""Grad-CAM over a whole set of images, and the pictures a user looks at: correct and failed predictions with
their true and predicted classes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from flax import nnx
from PIL import Image

from knifejax.atomic_write import save_image_atomically
from knifejax.errors import ConfigError
from knifejax.explain.gradcam import grad_cam_and_scores
from knifejax.explain.overlay import overlay, plot_grid

SELECTIONS = ("all", "correct", "failed")


@dataclass
class Explanations:
    """Per image: the uint8 image the model saw, its Grad-CAM map for the predicted class, the prediction and its
    probability, and the true label (-1 where unknown)."""

    images: np.ndarray
    maps: np.ndarray
    predicted: np.ndarray
    probability: np.ndarray
    labels: np.ndarray

    def select(self, which: str = "all", limit: int | None = None) -> np.ndarray:
        """Indices of the images to show: all, correctly or wrongly predicted ones (labelled images only),
        the most confident first for 'correct' and 'failed', at most `limit`."""
        if which not in SELECTIONS:
            raise ValueError(f"select must be one of {SELECTIONS}, got {which!r}")
        labelled = self.labels >= 0
        if which != "all" and not labelled.any():
            raise ValueError(f"select={which!r} needs true labels; these images have none")
        if which == "all":
            indices = np.arange(len(self.images))
        else:
            correct = self.predicted == self.labels
            keep = labelled & (correct if which == "correct" else ~correct)
            indices = np.flatnonzero(keep)
            indices = indices[np.argsort(-self.probability[indices], kind="stable")]
        return indices[:limit] if limit is not None else indices


def explain_images(
    model: nnx.Module,
    images: np.ndarray,
    mean,
    std,
    labels: np.ndarray | None = None,
    *,
    layer: str | None = None,
    batch_size: int = 16,
) -> Explanations:
    """Grad-CAM of the predicted class for uint8 images (N, H, W, 3), normalised with (mean, std), in batches."""
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"explain_images takes uint8 images (N, H, W, 3), got {images.dtype} {images.shape}")
    mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    maps, predicted, probability = [], [], []
    for start in range(0, len(images), batch_size):
        x = (images[start : start + batch_size].astype(np.float32) / 255.0 - mean) / std
        cams, chosen, probs = map(np.asarray, grad_cam_and_scores(model, x, layer=layer))
        maps.append(cams)
        predicted.append(chosen)
        probability.append(np.take_along_axis(probs, chosen[:, None], axis=1)[:, 0])
    labels = np.full(len(images), -1) if labels is None else np.asarray(labels)
    return Explanations(images, np.concatenate(maps), np.concatenate(predicted), np.concatenate(probability), labels)


def caption(explained: Explanations, i: int, class_names: list[str]) -> str:
    predicted = f"pred: {class_names[explained.predicted[i]]} ({explained.probability[i]:.2f})"
    if explained.labels[i] < 0:
        return predicted
    return f"true: {class_names[explained.labels[i]]}\n{predicted}"


def write_explanations(
    explained: Explanations,
    class_names: list[str],
    out_dir: str | Path,
    *,
    names: list[str] | None = None,
    which: str = "all",
    limit: int | None = None,
    title: str | None = None,
) -> list[Path]:
    """Write one overlay PNG per selected image (`<name>.png`) and `grid.png` with captions (green: correct,
    red: failed); returns the paths written, the grid last."""
    indices = explained.select(which, limit)
    if not len(indices):
        raise ConfigError(f"no {which} predictions to draw among {len(explained.images)} images")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = names or [f"image_{i:04d}" for i in range(len(explained.images))]
    written = []
    for i in indices:
        path = out_dir / f"{names[i]}.png"
        save_image_atomically(path, Image.fromarray(overlay(explained.images[i], explained.maps[i])))
        written.append(path)
    colors = [
        "black" if explained.labels[i] < 0 else "green" if explained.predicted[i] == explained.labels[i] else "red"
        for i in indices
    ]
    grid = plot_grid(
        [explained.images[i] for i in indices],
        [explained.maps[i] for i in indices],
        [caption(explained, i, class_names) for i in indices],
        out_dir / "grid.png",
        title=title,
        title_colors=colors,
    )
    return written + [grid]
