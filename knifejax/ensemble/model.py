"""`Ensemble`: trained runs combined by score averaging or a stacked head, scoring any images (written to
disk and read back by `knifejax.ensemble.store`).

Every member predicts with its own preprocessing; their outputs for named data (run splits, sources with a
fingerprint) come from the feature cache, so evaluating members and ensemble together, or again, runs each
member once per data set.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from knifejax.ensemble.averaging import average_scores, normalized_weights
from knifejax.ensemble.data import MemberData
from knifejax.ensemble.features import FeatureCache, Outputs
from knifejax.ensemble.members import EnsembleError, Member, check_class_names
from knifejax.ensemble.stacking import Params, StackerConfig, stacker_logits
from knifejax.metrics import evaluation_metrics

METHODS = ("average", "geometric", "stacked")


def labelled_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """`knifejax.metrics.evaluation_metrics` of (N, C) logits, or log-probabilities, of labelled images."""
    labels = np.asarray(labels)
    if labels.size == 0 or (labels < 0).any():
        raise EnsembleError("evaluation needs labelled images (these have none, or some are unlabelled)")
    return evaluation_metrics(logits, labels)


def log_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """Logits whose softmax is `probabilities`: their logarithm, with zeros (underflowed probabilities) held
    at float32's smallest normal number so that the loss stays finite."""
    return np.log(np.maximum(probabilities, np.finfo(np.float32).tiny))


class Ensemble:
    """Members (`knifejax.ensemble.members.Member`) combined by `method`:

    "average"    weighted mean of the members' softmax probabilities (the study's score averaging);
    "geometric"  weighted mean of their log-probabilities, renormalised;
    "stacked"    a shallow network (`stacker`, fitted by `build_ensemble`) over their concatenated
                 penultimate features.

    `directory` (the ensemble's folder) holds the feature cache; None keeps it in memory.
    """

    def __init__(
        self,
        members: Sequence[Member],
        method: str = "average",
        *,
        weights: Sequence[float] | None = None,
        stacker: Params | None = None,
        stacker_config: StackerConfig | None = None,
        fit_info: dict | None = None,
        directory: str | Path | None = None,
        batch_size: int = 32,
        log: Callable[[str], None] = print,
        progress: bool = True,
    ):
        if method not in METHODS:
            raise EnsembleError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        if not members:
            raise EnsembleError("an ensemble needs at least one member (--run DIR)")
        self.members = list(members)
        self.class_names = check_class_names(self.members)
        self.method = method
        if method == "stacked" and weights is not None:
            raise EnsembleError("weights apply to 'average' and 'geometric'; a stacked head learns its own")
        self.weights = None if method == "stacked" else normalized_weights(weights, len(self.members))
        self.stacker = stacker
        self.stacker_config = stacker_config
        self.fit_info = fit_info or {}
        self.batch_size = batch_size
        self.log = log
        self.data = MemberData(self.members, log, progress)
        self.directory: Path | None = None
        self.cache = FeatureCache()
        self.use_directory(directory)

    def use_directory(self, directory: str | Path | None) -> None:
        """Keep the feature cache in `directory`/features from now on (what is in memory stays)."""
        self.directory = None if directory is None else Path(directory)
        self.cache.directory = None if directory is None else self.directory / "features"

    @property
    def num_classes(self) -> int:
        return self.members[0].num_classes

    def member_outputs(self, data: Any) -> tuple[list[Outputs], np.ndarray, str]:
        """Per member (features, logits) of `data` (see `knifejax.ensemble.data`), the labels (-1: none)
        and a description of the images."""
        resolved = self.data.resolve(data)
        outputs = [self.cache.outputs(m, items, self.batch_size) for m, items in zip(self.members, resolved.items)]
        return outputs, resolved.labels, resolved.description

    def combine(self, outputs: Sequence[Outputs]) -> np.ndarray:
        """(N, C) probabilities of the ensemble from its members' outputs."""
        if self.method == "stacked":
            if self.stacker is None:
                raise EnsembleError("this stacked ensemble has no fitted head yet: build it with build_ensemble")
            features = np.concatenate([f for f, _ in outputs], axis=1)
            return np.asarray(jax.nn.softmax(stacker_logits(self.stacker, features), axis=-1))
        return average_scores([z for _, z in outputs], self.weights, geometric=self.method == "geometric")

    def predict_proba(self, data: Any) -> np.ndarray:
        """(N, C) class probabilities of the ensemble for `data`: uint8 images ((N, H, W, 3) or a list of
        (H, W, 3) of any sizes), a source, a `DataSpec`, or "train" / "val" / "test" of the members' runs."""
        outputs, _, _ = self.member_outputs(data)
        return self.combine(outputs)

    def evaluate(self, data: Any = "test") -> dict[str, float]:
        """Loss, MAP@1, MAP@5 and acc@5 of the ensemble on labelled `data` (as `predict_proba` takes it)."""
        outputs, labels, _ = self.member_outputs(data)
        return labelled_metrics(log_probabilities(self.combine(outputs)), labels)

    def report(self, data: Any = "test") -> dict:
        """Each member's metrics and the ensemble's on `data`, from one pass of each member."""
        outputs, labels, description = self.member_outputs(data)
        members = [
            {"run": str(m.run), "model": m.config.model, "size": m.size, **labelled_metrics(z, labels)}
            for m, (_, z) in zip(self.members, outputs)
        ]
        return {"data": description, "images": int(len(labels)), "members": members,
                "ensemble": {"method": self.method, **labelled_metrics(log_probabilities(self.combine(outputs)), labels)}}  # fmt: skip

    def __repr__(self) -> str:
        runs = ", ".join(str(m.run) for m in self.members)
        return f"Ensemble({self.method}, {len(self.members)} members: {runs})"
