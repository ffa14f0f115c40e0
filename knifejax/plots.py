"""Figures in the study's style: loss on a log scale and MAP@5, per epoch."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_training_curves(history: list[dict], path: str | Path, title: str | None = None) -> None:
    """Two panels from a run's metrics lines: train/validation loss (log scale) and validation MAP@1/MAP@5."""
    epochs = [h["epoch"] + 1 for h in history]
    fig, (ax_loss, ax_map) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], "s-", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", yscale="log", title="Loss")
    ax_map.plot(epochs, [h["val_map@5"] for h in history], "s-", label="validation MAP@5")
    ax_map.plot(epochs, [h["val_map@1"] for h in history], "^--", label="validation MAP@1")
    ax_map.plot(epochs, [h["train_map@5"] for h in history], "o:", label="train MAP@5 (augmented)")
    ax_map.set(xlabel="epoch", ylabel="MAP", ylim=(0, 1), title="MAP@k")
    for ax in (ax_loss, ax_map):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
