"""Penultimate features and logits of frozen members, extracted once per (member, images) and cached.

A member runs in eval mode with its own normalisation: `forward_head(forward_features(x), pre_logits=True)`
gives the features the stacked head learns from (timm's pre-logits, (N, head_hidden_size)), and the same
feature map through the classifier gives the member's logits — one forward pass for both.

The cache lives in `<ensemble dir>/features/`: `<run>-<member fingerprint>-<images fingerprint>.features.npy`
and `.logits.npy`. The member fingerprint changes with the run's checkpoint (path, step, config); the images
fingerprint with the files, their labels and the selection of items. A changed member or data set therefore
misses the cache instead of reading stale features. Files are written under a temporary name and renamed.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from knifejax.atomic_write import write_bytes_atomically
from knifejax.data.split import Split
from knifejax.ensemble.data import MemberItems
from knifejax.ensemble.members import Member
from knifejax.predict import predict
from knifejax.train.steps import normalize_images

Outputs = tuple[np.ndarray, np.ndarray]  # (features (N, D), logits (N, C)), float32


def make_forward(model: nnx.Module, mean, std) -> Callable[[jax.Array], tuple[jax.Array, jax.Array]]:
    """A jit-compiled `uint8 images (B, S, S, 3) -> (pre-logits features, logits)` of `model` in eval mode."""
    model.eval()
    graphdef, state = nnx.split(model)

    @jax.jit
    def forward(state, images):
        net = nnx.merge(graphdef, state, copy=True)
        net.eval()
        fmap = net.forward_features(normalize_images(images, mean, std))
        features = net.forward_head(fmap, pre_logits=True)
        return features.astype(jnp.float32), net.forward_head(fmap).astype(jnp.float32)

    return lambda images: forward(state, images)


def _forward(member: Member) -> Callable:
    if member.forward is None:  # compiled once per member
        member.forward = make_forward(member.model, member.mean, member.std)
    return member.forward


def extract(member: Member, split: Split, batch_size: int = 32) -> Outputs:
    """Features and logits of `member` for every item of `split`, in order."""
    return predict(_forward(member), split, batch_size)


class FeatureCache:
    """Member outputs by images fingerprint: in the member's memory (shared by every ensemble holding that
    member) and, given a directory, on disk."""

    def __init__(self, directory: str | Path | None = None):
        self.directory = None if directory is None else Path(directory)

    def paths(self, member: Member, fingerprint: str) -> tuple[Path, Path] | None:
        if self.directory is None:
            return None
        stem = f"{member.name}-{member.fingerprint[:12]}-{fingerprint[:16]}"
        return self.directory / f"{stem}.features.npy", self.directory / f"{stem}.logits.npy"

    def outputs(self, member: Member, items: MemberItems, batch_size: int = 32) -> Outputs:
        if items.fingerprint is None:
            return extract(member, items.load(), batch_size)
        paths = self.paths(member, items.fingerprint)
        on_disk = paths is not None and all(p.exists() for p in paths)
        result = member.outputs.get(items.fingerprint)
        if result is None:
            result = (np.load(paths[0]), np.load(paths[1])) if on_disk else extract(member, items.load(), batch_size)
            member.outputs[items.fingerprint] = result
        if paths is not None and not on_disk and jax.process_index() == 0:
            for path, array in zip(paths, result):
                _save_atomically(path, array)
        return result


def _save_atomically(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    npy = io.BytesIO()
    np.save(npy, array)
    write_bytes_atomically(path, npy.getvalue())
