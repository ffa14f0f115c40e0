"""timm state dicts <-> knifejax models.

Model attribute paths equal timm's module paths, so a timm key names its parameter directly
(`layer1.0.conv1.weight` is `model.layer1[0].conv1.weight`). The only rule left is the array layout,
which each layer class declares in `torch_layout` (e.g. convolutions OIHW <-> HWIO). Checkpoints in
other naming schemes are renamed to timm's first (see `knifejax.models.pretrained`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import jax
import numpy as np
from flax import nnx

from knifejax.atomic_write import write_bytes_atomically
from knifejax.io import CheckpointError
from knifejax.io.readers import open_state_dict

_IGNORED_SUFFIXES = ("num_batches_tracked",)
_MAX_LISTED = 10


class WeightMismatchError(CheckpointError):
    """A checkpoint does not fit the model. The message (one line) names the first keys of each kind; the
    attributes `missing`, `unexpected` and `mismatched` list them all."""

    def __init__(self, message: str, missing: list[str], unexpected: list[str], mismatched: list[str]) -> None:
        super().__init__(message)
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched


class NonFiniteWeightsError(CheckpointError):
    """A checkpoint holds NaN or infinite values: names the keys."""


@dataclass(frozen=True)
class _Slot:
    variable: nnx.Variable
    layout: tuple[int, ...] | None  # permutation from knifejax's layout to PyTorch's

    def to_torch(self) -> np.ndarray:
        value = np.asarray(self.variable[...])
        return np.ascontiguousarray(value.transpose(self.layout) if self.layout else value)

    def from_torch(self, array: np.ndarray) -> np.ndarray:
        return array.transpose(np.argsort(self.layout)) if self.layout else array

    @property
    def torch_shape(self) -> tuple[int, ...]:
        shape = self.variable[...].shape
        return tuple(shape[i] for i in self.layout) if self.layout else tuple(shape)


def timm_slots(model: nnx.Module) -> dict[str, _Slot]:
    """Every parameter and BatchNorm statistic of `model`, keyed by its timm state-dict name."""
    slots = {}
    for path, module in nnx.iter_modules(model):
        layouts = getattr(module, "torch_layout", {})
        for name, value in vars(module).items():
            if isinstance(value, (nnx.Param, nnx.BatchStat)):
                key = ".".join(str(p) for p in (*path, name))
                slots[key] = _Slot(value, layouts.get(name))
    return slots


def _classifier_prefix(model: nnx.Module) -> str | None:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    name = cfg.get("classifier")
    return f"{name}." if isinstance(name, str) else None


def _format_keys(title: str, keys: list[str]) -> str:
    more = f" and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else ""
    return f"{title} ({len(keys)}): " + ", ".join(keys[:_MAX_LISTED]) + more


def load_timm_weights(
    model: nnx.Module, weights: Mapping[str, object] | str | os.PathLike, strict: bool = True
) -> nnx.Module:
    """Load a timm state dict into `model` in place and return the model.

    weights: a mapping of timm key -> array (numpy, jax or torch), or a path to `.safetensors`, `.npz`,
        `.pth`/`.pt`/`.bin` (read without torch; wrapped `state_dict`/`model` dicts and `module.` prefixes
        are handled).
    strict: every model key must be present and nothing else; with False, missing and unexpected keys
        are tolerated (as torch's `load_state_dict(strict=False)`), shape mismatches never are.

    Model-specific adaptation: a model with a method `adapt_timm_state(state) -> state` gets the state dict
    (timm keys -> numpy arrays, PyTorch layouts) first and returns it adapted as timm's checkpoint filter
    would when timm loads pretrained weights — a ViT resamples position embeddings made for another input
    size (see `knifejax.models.vit`). Keys are matched after that, with the same checks.

    All or nothing: on any problem one `WeightMismatchError` names the missing, unexpected and mis-shaped
    keys (all of them in its attributes) and the model is left unchanged. Names and shapes are compared before any tensor is read,
    so a file that does not fit costs no more memory than its header; only the model's keys are read. A
    weight holding NaN or infinity is refused (`NonFiniteWeightsError`, naming the keys). A classifier for another class count, or
    none in the checkpoint (a headless export such as DINO's), is not an error: the model's keeps its fresh
    initialisation and a warning says so.
    """
    source = f" from {os.fspath(weights)}" if isinstance(weights, (str, os.PathLike)) else ""
    with open_state_dict(weights) as checkpoint:
        state = {k: v for k, v in checkpoint.entries.items() if not k.endswith(_IGNORED_SUFFIXES)}
        adapt = getattr(model, "adapt_timm_state", None)
        if callable(adapt):
            state = adapt(state)
        slots = timm_slots(model)
        state, slots, foreign_head = _without_foreign_head(model, state, slots)
        _check_fit(model, state, slots, strict, source)
        wanted = [k for k in slots if k in state]
        arrays = checkpoint.read(k for k in wanted if state[k] is checkpoint.entries.get(k))
        arrays.update({k: np.asarray(state[k]) for k in wanted if k not in arrays})  # what adapt made
    _check_finite(arrays, source)
    if foreign_head:  # said only for a load that goes ahead: a refused file gets its error alone
        warnings.warn(foreign_head, stacklevel=2)
    converted = {}
    for key, array in arrays.items():
        slot = slots[key]
        # A copy, never a view: the source may be a live torch state dict that keeps training. Copied and cast by
        # numpy, then placed: `jnp.array(..., copy=True)` compiled a copy program per parameter shape (0.7 s of
        # Lite0's 1.7 s load).
        converted[key] = jax.device_put(np.array(slot.from_torch(array), dtype=slot.variable[...].dtype))
    for key, value in converted.items():
        slots[key].variable[...] = value
    return model


def _without_foreign_head(
    model: nnx.Module, state: dict, slots: dict[str, _Slot]
) -> tuple[dict, dict, str | None]:
    """Drop a checkpoint classifier made for another class count: the model's stays fresh. A checkpoint with no
    classifier at all (a headless export, such as DINO's ViTs, whose timm tags have `num_classes` 0) leaves the
    model's fresh too, as timm's pretrained loading does. Returns the warning that says so (None when the
    classifier fits)."""
    head = _classifier_prefix(model)
    if head is None:
        return state, slots, None
    ckpt_head = {k for k in state if k.startswith(head)}
    model_head = {k for k in slots if k.startswith(head)}
    if model_head and not ckpt_head:
        warning = (f"checkpoint has no classifier ({head}*): this model's classifier for "
                   f"{getattr(model, 'num_classes', '?')} classes keeps its fresh initialisation")  # fmt: skip
        return state, {k: v for k, v in slots.items() if k not in model_head}, warning
    head_differs = ckpt_head != model_head or any(tuple(state[k].shape) != slots[k].torch_shape for k in ckpt_head)
    if not (ckpt_head and head_differs):
        return state, slots, None
    shapes = ", ".join(f"{k} {tuple(state[k].shape)}" for k in sorted(ckpt_head))
    warning = (
        f"checkpoint classifier ({shapes}) does not fit this model's {getattr(model, 'num_classes', '?')} classes: "
        "the classifier keeps its fresh initialisation"
    )
    return (
        {k: v for k, v in state.items() if k not in ckpt_head},
        {k: v for k, v in slots.items() if k not in model_head},
        warning,
    )


def _check_fit(model: nnx.Module, state: dict, slots: dict[str, _Slot], strict: bool, source: str) -> None:
    """Names and shapes against the model, before any tensor is read (shapes are known from the header)."""
    missing = sorted(k for k in slots if k not in state)
    unexpected = sorted(k for k in state if k not in slots)
    mismatched = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)}, model expects {slots[k].torch_shape} (PyTorch layout)"
        for k in slots
        if k in state and tuple(state[k].shape) != slots[k].torch_shape
    )
    if mismatched or (strict and (missing or unexpected)):
        parts = [_format_keys(t, ks) for t, ks in
                 (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)) if ks]
        name = (getattr(model, "pretrained_cfg", None) or {}).get("architecture", type(model).__name__)
        raise WeightMismatchError(
            f"checkpoint{source} does not fit {name} (the model was left unchanged): " + "; ".join(parts)
            + ". Check that the checkpoint was made for this architecture (and the model was created with the "
            "same num_classes / global_pool), or pass strict=False to ignore missing and unexpected keys",
            missing, unexpected, mismatched,
        )


def _check_finite(arrays: dict[str, np.ndarray], source: str) -> None:
    """NaN or infinity in a weight is a damaged file or a diverged run: refuse it rather than predict NaN."""
    bad = [k for k, a in arrays.items() if np.issubdtype(a.dtype, np.inexact) and not np.isfinite(a).all()]
    if bad:
        listed = ", ".join(bad[:_MAX_LISTED]) + (f" and {len(bad) - _MAX_LISTED} more" if len(bad) > _MAX_LISTED else "")
        raise NonFiniteWeightsError(
            f"checkpoint{source} holds NaN or infinite values in {listed}; the model was left unchanged. "
            "The file is damaged or was saved from a diverged run: use an earlier checkpoint"
        )


def timm_state_dict(model: nnx.Module) -> dict[str, np.ndarray]:
    """The model's parameters and BatchNorm statistics as a timm state dict (PyTorch layouts)."""
    return {key: slot.to_torch() for key, slot in timm_slots(model).items()}


def save_timm_weights(model: nnx.Module, path: str | os.PathLike) -> None:
    """Write the model as a timm `.safetensors` state dict, loadable by timm's `load_state_dict`; atomically, so an
    interrupted save leaves no half-written weights file."""
    from safetensors.numpy import save

    path = os.fspath(path)
    if not path.endswith(".safetensors"):
        raise ValueError(f"save_timm_weights writes .safetensors files; got {path!r}")
    write_bytes_atomically(path, save(timm_state_dict(model)))
