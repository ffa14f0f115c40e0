"""An ensemble on disk, and `load_ensemble` to get it back.

    ENSEMBLE/
      ensemble.json   method, members (run directory — relative to ENSEMBLE, or absolute — checkpoint, model,
                      step and feature size as built), weights, class names, the stacked head's
                      hyper-parameters and what it was fit on
      stacker/        Orbax: the stacked head's parameters (stacked ensembles only)
      features/       the feature cache: members' penultimate features and logits per data set (.npy)

Loading reads the members from their run directories, so an ensemble stays small; a member whose run has
moved on (another checkpoint step) since the ensemble was built is loaded with a warning, since a stacked
head was fit on the features of the old one.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import jax

from knifejax.atomic_write import write_text_atomically
from knifejax.ensemble.members import EnsembleError, load_member
from knifejax.ensemble.model import Ensemble
from knifejax.ensemble.stacking import StackerConfig, init_stacker
from knifejax.errors import MissingError
from knifejax.train.checkpoint import Checkpoints

FORMAT = 1
ENSEMBLE_FILE = "ensemble.json"


def _relative(run: Path, directory: Path) -> str:
    try:
        return os.path.relpath(run.resolve(), directory.resolve())
    except ValueError:  # another drive (Windows)
        return str(run.resolve())


def save_ensemble(ensemble: Ensemble, directory: str | Path) -> Path:
    """Write `ensemble` to `directory` (created; an ensemble already there is replaced)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    spec = {
        "format": FORMAT,
        "method": ensemble.method,
        "members": [
            {"run": _relative(m.run, directory), "which": m.which, "model": m.config.model, "step": m.step,
             "image_size": m.size, "feature_dim": m.feature_dim}  # fmt: skip
            for m in ensemble.members
        ],
        "weights": None if ensemble.weights is None else [float(w) for w in ensemble.weights],
        "class_names": ensemble.class_names,
        "stacker": None,
    }
    stacker_dir = directory / "stacker"
    if stacker_dir.exists():
        shutil.rmtree(stacker_dir)  # a rebuilt head replaces the old one (Orbax keeps a step it already has)
    if ensemble.method == "stacked":
        if ensemble.stacker is None:
            raise EnsembleError("a stacked ensemble can be saved only once its head is fit")
        spec["stacker"] = {"config": ensemble.stacker_config.to_json(), "fit": ensemble.fit_info}
        checkpoints = Checkpoints(stacker_dir)
        checkpoints.save(0, {"stacker": ensemble.stacker}, {"fit": ensemble.fit_info})
        checkpoints.close()
    write_text_atomically(directory / ENSEMBLE_FILE, json.dumps(spec, indent=1) + "\n")
    ensemble.use_directory(directory)
    return directory


def load_ensemble(directory: str | Path, *, batch_size: int = 32, log: Callable[[str], None] = print) -> Ensemble:
    """The ensemble saved in `directory`, its members loaded from their run directories."""
    directory = Path(directory)
    path = directory / ENSEMBLE_FILE
    if not path.exists():
        raise MissingError(f"{directory} is not an ensemble directory: it has no {ENSEMBLE_FILE}")
    spec = json.loads(path.read_text())
    if spec.get("format") != FORMAT:
        raise EnsembleError(f"{path}: unknown format {spec.get('format')!r} (this knifejax reads format {FORMAT})")
    members = []
    for entry in spec["members"]:
        run = Path(entry["run"])
        run = run if run.is_absolute() else directory / run
        if not run.exists():
            raise EnsembleError(f"{path}: member run {run} does not exist (run directories are referenced, not copied)")
        member = load_member(run, entry["which"])
        if member.step != entry["step"] or member.feature_dim != entry["feature_dim"]:
            warnings.warn(
                f"run {run} has changed since the ensemble was built (its {entry['which']} checkpoint is now step "
                f"{member.step}, was {entry['step']}); rebuild the ensemble to use it as it is now",
                stacklevel=2,
            )
        members.append(member)
    if members and spec["class_names"] != members[0].class_names:
        raise EnsembleError(f"{path}: the class names saved with the ensemble differ from run {members[0].run}'s")
    stacker = stacker_config = fit_info = None
    if spec["method"] == "stacked":
        stacker_config = StackerConfig.from_json(spec["stacker"]["config"])
        fit_info = spec["stacker"]["fit"]
        template = init_stacker(jax.random.key(0), fit_info["input_dim"], members[0].num_classes, stacker_config)
        checkpoints = Checkpoints(directory / "stacker", create=False)
        trees, _ = checkpoints.restore({"stacker": template})
        checkpoints.close()
        stacker = trees["stacker"]
    return Ensemble(
        members,
        spec["method"],
        weights=spec["weights"],
        stacker=stacker,
        stacker_config=stacker_config,
        fit_info=fit_info,
        directory=directory,
        batch_size=batch_size,
        log=log,
    )
