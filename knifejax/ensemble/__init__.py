"""Ensembles of trained runs, as in the study's Table 4: score averaging and a stacked head.

    averaging.py   average_scores: weighted arithmetic or geometric mean of the members' probabilities
    members.py     Member: one run loaded with its own preprocessing; class-name agreement
    data.py        what to score, resolved per member (run splits, data specs, sources, images)
    features.py    penultimate features + logits per member, extracted once and cached as .npy
    stacking.py    the stacked head: pure init / apply / fit over one parameter pytree
    model.py       Ensemble: predict_proba, evaluate, report
    build.py       build_ensemble: load runs, fit the stacked head on held-out images
    store.py       ensemble.json + Orbax head: save_ensemble, load_ensemble
"""

from knifejax.ensemble.averaging import average_scores
from knifejax.ensemble.build import build_ensemble
from knifejax.ensemble.data import DataSpec
from knifejax.ensemble.members import EnsembleError, Member, load_member
from knifejax.ensemble.model import METHODS, Ensemble
from knifejax.ensemble.stacking import StackerConfig, fit_stacker, init_stacker, stacker_logits
from knifejax.ensemble.store import load_ensemble, save_ensemble

__all__ = [
    "METHODS",
    "DataSpec",
    "Ensemble",
    "EnsembleError",
    "Member",
    "StackerConfig",
    "average_scores",
    "build_ensemble",
    "fit_stacker",
    "init_stacker",
    "load_ensemble",
    "load_member",
    "save_ensemble",
    "stacker_logits",
]
