"""`build_ensemble`: load runs as members and, for a stacked ensemble, fit its head on held-out images.

Where the stacked head is fit matters. A member fits its own training images far better than new ones, so
its features there are overconfident and cleaner than at test time; a head fit on them learns to trust
whatever member memorised most. The default, `fit_on="val"`, fits on the validation images that no member
trained on, so the head sees the members as the test set will. The study fit on the training split:
`fit_on="train"` reproduces that.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from knifejax.ensemble.members import EnsembleError, Member, load_member
from knifejax.ensemble.model import METHODS, Ensemble
from knifejax.ensemble.stacking import StackerConfig, fit_stacker
from knifejax.ensemble.store import save_ensemble
from knifejax.metrics import ranking_metrics


def build_ensemble(
    runs: str | Path | Member | Sequence[str | Path | Member],
    method: str = "average",
    *,
    weights: Sequence[float] | None = None,
    which: str | Sequence[str] = "best",
    stacker: StackerConfig | None = None,
    fit_on: Any = "val",
    out: str | Path | None = None,
    batch_size: int = 32,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> Ensemble:
    """An ensemble of the trained runs `runs` (run directories, or members already loaded with `load_member`:
    ensembles sharing members share their computed features), saved to `out` when given.

    method: "average" (mean of probabilities), "geometric" (mean of log-probabilities) or "stacked".
    weights: one per run, for "average"/"geometric" (default equal).
    which: "best" or "latest" checkpoint, for all runs or one per run (ignored for loaded members).
    stacker: the stacked head's hyper-parameters (default `StackerConfig()`).
    fit_on: the images the stacked head is fit on: "val" (default: held out from every member), "train"
        (the study's choice), or any labelled data `Ensemble.predict_proba` takes.
    progress: progress bars while the members' data is checked and decoded.
    out: the ensemble directory: `ensemble.json`, the head's weights, and the feature cache (reused by a
        rebuild with the same members and data). None: nothing is written.
    """
    if method not in METHODS:
        raise EnsembleError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    runs = [runs] if isinstance(runs, (str, Path, Member)) else list(runs)
    whiches = [which] * len(runs) if isinstance(which, str) else list(which)
    if len(whiches) != len(runs):
        raise EnsembleError(f"{len(whiches)} values of which for {len(runs)} runs")
    if method != "stacked" and stacker is not None:
        raise EnsembleError("stacker settings apply only to method='stacked'")
    members = [run if isinstance(run, Member) else load_member(run, w) for run, w in zip(runs, whiches)]
    ensemble = Ensemble(members, method, weights=weights, directory=out, batch_size=batch_size, log=log,
                        progress=progress)
    if method == "stacked":
        fit_stacked_head(ensemble, stacker or StackerConfig(), fit_on)
    if out is not None:
        save_ensemble(ensemble, out)
    return ensemble


def fit_stacked_head(ensemble: Ensemble, cfg: StackerConfig, fit_on: Any = "val") -> None:
    """Fit `ensemble`'s stacked head on the members' features of `fit_on` (cached); sets `ensemble.stacker`."""
    outputs, labels, description = ensemble.member_outputs(fit_on)
    if (labels < 0).any():
        raise EnsembleError(f"the stacked head is fit on labelled images; {description} has none")
    features = np.concatenate([f for f, _ in outputs], axis=1)
    params, losses = fit_stacker(features, labels, ensemble.num_classes, cfg)
    ensemble.stacker, ensemble.stacker_config = params, cfg
    ensemble.fit_info = {
        "fit_on": fit_on if isinstance(fit_on, str) else str(description),
        "images": int(len(labels)),
        "classes_seen": int(len(np.unique(labels))),
        "input_dim": int(features.shape[1]),
        "first_loss": float(losses[0]),
        "final_loss": float(losses[-1]),
    }
    fitted = ranking_metrics(ensemble.combine(outputs), labels)
    ensemble.log(
        f"stacked head ({cfg.depth} hidden layer(s), {features.shape[1]} features) fit on {description}: "
        f"loss {losses[0]:.3f} -> {losses[-1]:.3f}, MAP@5 there {float(fitted['map@5']):.4f}"
    )
