"""Table 4 and Fig. 8 of the study: each model's MAP@1 beside two ensembles of them — the mean of their
probabilities (score averaging) and a stacked shallow network over their penultimate features.

The members are the runs of `compare_architectures` with the same flags (its folder beside this one's, or
`--members DIR`): finished runs are reused, missing ones are trained first. With `--seeds N` each seed's runs
form one ensemble, and the table shows mean ± std over seeds; with one seed, ± is the standard error over
the test images.

    python -m experiments.ensemble                 # quick preset: reuses compare_architectures' quick runs
    python -m experiments.ensemble --help
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

from experiments import compare_architectures, runner, study_results
from experiments.members import run_members, write_results
from experiments.presets import PRESETS
from knifejax.atomic_write import write_text_atomically
from knifejax.ensemble import StackerConfig, average_scores, build_ensemble, load_member
from knifejax import study
from knifejax.metrics import chance_map_at_k, ranking_metrics, standard_errors
from knifejax.models.registry import split_model_name
from knifejax.plots import plot_ensemble_comparison

# The study's shallow network: one hidden layer. Its width is not given; 256 is knifejax's default.
STUDY_STACKER = StackerConfig(depth=1, hidden=256)
STUDY_ENSEMBLES = {"score averaging": study_results.TABLE4_AVERAGING,
                   "stacked NN, fit on train (the study's)": study_results.TABLE4_STACKED}  # fmt: skip
SE_NOTE = "± is the standard error over the test images (one seed)"

EXPERIMENT = runner.Experiment(
    name="ensemble",
    title="Table 4, Fig. 8 — ensembles: score averaging vs stacked shallow network",
    about="The compare_architectures runs combined by the mean of their probabilities and by a shallow network "
    "(one hidden layer of 256) over their concatenated penultimate features; MAP@1 and MAP@5 on the test images.",
    settings=compare_architectures.settings,
    table=compare_architectures.EXPERIMENT.table,
)


def methods(has_test: bool) -> dict[str, dict]:
    """The ensembles built from each seed's members. Fitting the head on the validation images is only honest
    when a separate test set scores it (the study validated on its test set)."""
    chosen = {
        "score averaging": dict(method="average"),
        "stacked NN, fit on train (the study's)": dict(method="stacked", stacker=STUDY_STACKER, fit_on="train"),
    }
    if has_test:
        chosen["stacked NN, fit on validation"] = dict(method="stacked", stacker=STUDY_STACKER, fit_on="val")
    return chosen


def _scores(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    """MAP@1 and MAP@5 with their standard errors over the images."""
    ranked = ranking_metrics(probabilities, labels)
    return {"map@1": float(ranked["map@1"]), "map@5": float(ranked["map@5"])} | standard_errors(probabilities, labels)


def ensemble_seed(member_runs: list[dict], out: Path, log, progress: bool = True) -> dict:
    """Every member's and every ensemble's scores on the test images (the validation images without test data)."""
    # the final models (as compare_architectures' test column), loaded once: the ensembles share their features
    members = [load_member(run["run_dir"], "latest") for run in member_runs]
    split = "test" if members[0].config.test_data is not None else "val"
    rows, fits = {}, {}
    for name, how in methods(split == "test").items():
        ensemble = build_ensemble(members, out=out / runner.slug(name), log=log, progress=progress, **how)
        outputs, labels, description = ensemble.member_outputs(split)
        if not rows:
            for run, member, (_, logits) in zip(member_runs, members, outputs):
                rows[run["setting"]] = {"kind": "member", "model": member.config.model,
                                        **_scores(average_scores([logits]), labels)}  # fmt: skip
        rows[name] = {"kind": "ensemble", **_scores(ensemble.combine(outputs), labels)}
        if ensemble.fit_info:
            fits[name] = ensemble.fit_info
    return {"data": description, "images": int(len(labels)), "rows": rows, "stacker_fits": fits}


def summarise(per_seed: list[dict]) -> list[dict]:
    """Rows for the table and figure: one seed as measured (± s.e. over images), several as mean ± std over seeds."""
    names = list(per_seed[0]["rows"])
    rows = []
    for name in names:
        values = [seed["rows"][name] for seed in per_seed]
        row = {"name": name, "kind": values[0]["kind"], "model": values[0].get("model")}
        for key in ("map@1", "map@5"):
            if len(values) == 1:
                row[key], row[f"{key}_se"] = values[0][key], values[0][f"{key}_se"]
            else:
                row[key] = statistics.mean(v[key] for v in values)
                row[f"{key}_se"] = statistics.stdev(v[key] for v in values)
        rows.append(row)
    return rows


def study_map1(row: dict) -> float | None:
    """The study's MAP@1 for a row of the table: its Table 4 member of the row's architecture, or its ensemble."""
    if row["kind"] == "member":
        reading = study_results.TABLE4_MEMBERS.get(split_model_name(row.get("model") or "")[0])
    else:
        reading = STUDY_ENSEMBLES.get(row["name"])
    return None if reading is None else reading.map1


def study_table4_members() -> str:
    """The study's four members with their MAP@1, whichever rows a preset trains."""
    members = [a for a in study.ARCHITECTURES if a.ensemble_member]
    return ", ".join(f"{a.label} {study_results.TABLE4_MEMBERS[split_model_name(a.model)[0]].map1:.3f}" for a in members)


def write_table(document: dict, path: Path) -> Path:
    seeds = len(document["seeds"])
    spread = SE_NOTE if seeds == 1 else f"mean ± sample standard deviation over {seeds} seeds (one ensemble per seed)"
    lines = [
        f"# {document['title']}", "", EXPERIMENT.about, "", document["preset"]["description"], "",
        f"Members: the runs in `{document['members_from']}`. Scored on {document['per_seed'][0]['data']}; {spread}.",
        "", "| model | MAP@1 | MAP@5 | study MAP@1 |", "|---|---|---|---|",
    ]  # fmt: skip
    for row in document["rows"]:
        cells = [f"{row[k]:.3f} ± {row[f'{k}_se']:.3f}" for k in ("map@1", "map@5")]
        reference = study_map1(row)
        name = row["name"] if row["kind"] == "member" else f"**{row['name']}**"
        lines.append(f"| {name} | {' | '.join(cells)} | {'—' if reference is None else f'{reference:.3f}'} |")
    lines += [
        "", "Notes:",
        f"- stacked NN: the members' penultimate features standardised, one hidden layer of {STUDY_STACKER.hidden} "
        f"(ReLU), dropout {STUDY_STACKER.dropout}, AdamW lr {STUDY_STACKER.lr:g}, weight decay "
        f"{STUDY_STACKER.weight_decay:g}, {STUDY_STACKER.epochs} full-batch epochs (the study gives no width or "
        "recipe).",
        "- fit on train: the study's way; the members have fit those images, so their features there are cleaner "
        "than on new images. Fit on validation: images no member trained on (knifejax's default, "
        "docs/ensembles.md); only with a separate test set.",
        f"- the study's column: its Table 4 (MAP@1 on real photos, members from ImageNet weights): its four members "
        f"{study_table4_members()} and their two ensembles (score averaging {study_results.TABLE4_AVERAGING.map1:.3f}, "
        f"stacked NN {study_results.TABLE4_STACKED.map1:.3f}); at the study preset the ensembles here combine the same "
        "four (EfficientNet-B3 is a Table 3 row only).",
        "", f"Command: `{document['command']}`; total wall time {document['wall_seconds']:.0f} s.", "",
    ]  # fmt: skip
    write_text_atomically(path, "\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    work = partial(_ensemble, argv=argv, started=time.perf_counter())
    return run_members(EXPERIMENT, compare_architectures.EXPERIMENT, argv, work)


def _ensemble(args: argparse.Namespace, out: Path, members_from: Path, members: dict, *, argv: list[str],
              started: float) -> dict:
    log = partial(runner.say, progress=not args.no_progress)
    per_seed = []
    chosen = compare_architectures.ensemble_members(PRESETS[runner.preset_name(args)])
    for seed in range(args.seeds):
        runs = [r for r in members["runs"] if r["seed"] == seed and r["setting"] in chosen]
        per_seed.append(ensemble_seed(runs, out / "ensembles" / f"seed{seed}", log, progress=not args.no_progress))
    document = write_results(EXPERIMENT, argv, args, members, members_from, out, started, list(range(args.seeds)),
                             stacker=STUDY_STACKER.to_json(), per_seed=per_seed, rows=summarise(per_seed))
    table = write_table(document, out / "table.md")
    classes = len(json.loads((Path(members["runs"][0]["run_dir"]) / "classes.json").read_text()))
    chance = {"map@1": chance_map_at_k(classes, 1), "map@5": chance_map_at_k(classes, 5)}
    spread = "± s.e. over test images" if args.seeds == 1 else f"mean ± std of {args.seeds} seeds"
    figure = out / "fig8_ensembles.png"
    plot_ensemble_comparison(document["rows"], figure, title=f"{EXPERIMENT.title} ({spread})", chance=chance)
    print(f"done in {document['wall_seconds']:.0f} s; wrote {out / 'results.json'}, {table}, {figure}", flush=True)
    return document


if __name__ == "__main__":
    main()
