"""An ensemble member: one trained run, loaded with everything needed to score images its own way.

Each member keeps its run's preprocessing — image size and normalisation from the run's config — so an
ensemble may mix architectures, sizes and normalisations. Its fingerprint names exactly the weights it
was loaded with (run path, checkpoint, step, config), and keys the feature cache.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flax import nnx

from knifejax.errors import MissingError, UserError
from knifejax.train.checkpoint import Checkpoints
from knifejax.train.config import TrainConfig
from knifejax.train.run import RunDir, image_size, load_run, normalization


class EnsembleError(UserError, ValueError):
    """Members that cannot be combined, or an ensemble directory that cannot be used."""


@dataclass(eq=False)
class Member:
    run: Path  # the run directory as given
    which: str  # "best" or "latest"
    model: nnx.Module  # in eval mode
    config: TrainConfig
    class_names: list[str]
    size: int  # input size in pixels
    mean: tuple
    std: tuple
    step: int  # the checkpoint's step (epoch for "best")
    fingerprint: str
    forward: Callable | None = field(default=None, repr=False)  # jit-compiled by knifejax.ensemble.features
    outputs: dict = field(default_factory=dict, repr=False)  # (features, logits) by images fingerprint, in memory
    prepared: Any = field(default=None, repr=False)  # the run's own data splits, once asked for (ensemble.data)

    @property
    def name(self) -> str:
        return self.run.name

    @property
    def num_classes(self) -> int:
        return self.config.num_classes or len(self.class_names)

    @property
    def feature_dim(self) -> int:
        return int(self.model.head_hidden_size)

    def describe(self) -> str:
        return f"{self.run} ({self.config.model}, {self.size}px, {self.which})"


def _checkpoint_step(run: RunDir, which: str) -> tuple[int, int]:
    """(step, modification time in ns) of the checkpoint `which` of `run`."""
    folder = run.best if which == "best" else run.latest
    checkpoints = Checkpoints(folder, create=False)
    step = checkpoints.latest_step()
    checkpoints.close()
    if step is None:
        raise MissingError(f"{folder} holds no checkpoint yet: the run has not finished an epoch")
    step_dir = folder / str(step)
    return step, (step_dir.stat().st_mtime_ns if step_dir.exists() else 0)


def load_member(run_dir: str | Path, which: str = "best") -> Member:
    """The trained model of `run_dir` with its preprocessing (see `knifejax.train.run.load_run`)."""
    run = RunDir(run_dir)
    model, cfg, names = load_run(run.path, which)
    step, mtime = _checkpoint_step(run, which)
    mean, std = normalization(cfg.norm, model.pretrained_cfg)
    identity = {"run": str(run.path.resolve()), "which": which, "step": step, "mtime": mtime, "config": cfg.to_json()}
    fingerprint = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    size = image_size(cfg, model.pretrained_cfg)
    return Member(run.path, which, model, cfg, names, size, mean, std, step, fingerprint)


def check_class_names(members: list[Member]) -> list[str]:
    """The members' common class names; an EnsembleError naming the run and the first class that differs."""
    first = members[0]
    for member in members[1:]:
        if member.class_names == first.class_names and member.num_classes == first.num_classes:
            continue
        a, b = first.class_names, member.class_names
        i = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        if i < min(len(a), len(b)):
            detail = f"class {i} is {b[i]!r} there but {a[i]!r} in {first.run}"
        elif len(a) != len(b):
            detail = f"it has {len(b)} classes, {first.run} has {len(a)} (first unmatched: class {i})"
        else:
            detail = f"its classifier has {member.num_classes} outputs, {first.run}'s has {first.num_classes}"
        raise EnsembleError(
            f"run {member.run} does not agree with {first.run} on the classes: {detail}. Members of an ensemble "
            f"must be trained on the same classes in the same order (see each run's classes.json)."
        )
    return list(first.class_names)
