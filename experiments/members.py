"""Experiments built on another experiment's trained runs (the ensembles and Grad-CAM use compare_architectures'):
their command line is the runner's plus `--members DIR`, and they first run that experiment with the same flags,
so finished runs are reused and missing ones trained."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from experiments import runner
from experiments.presets import PRESETS
from knifejax.atomic_write import write_text_atomically
from knifejax.errors import reported_errors
from knifejax.output_paths import check_writable_folder


def parser(experiment: runner.Experiment, source: runner.Experiment) -> argparse.ArgumentParser:
    p = runner.parser(experiment)
    p.add_argument("--members", type=Path, metavar="DIR",
                   help=f"the {source.name} folder whose runs are used (default: its folder for the preset, beside "
                   "this one's)")  # fmt: skip
    return p


def _source_argv(argv: list[str]) -> list[str]:
    """The command line as the source experiment takes it: without --out and --members."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--out", "--members"):
            skip = True
        elif not arg.startswith(("--out=", "--members=")):
            kept.append(arg)
    return kept


def run_members(experiment: runner.Experiment, source: runner.Experiment, argv: list[str],
                work: Callable[..., dict]) -> dict:
    """Parse `argv` for `experiment`, run `source` with the same flags into the members folder, then
    `work(args, out, members_from, members)` (the parsed arguments, this experiment's output folder, the members
    folder, the source's results document) and return what it returns ({} with --list). All of it is reported as
    every experiment is: a user's mistake in one `knifejax: error:` line, exit 2 (`knifejax.errors`)."""
    args = parser(experiment, source).parse_args(argv)
    with reported_errors(debug=args.debug, on_interrupt=lambda: runner.RESUMES):
        preset = runner.preset_name(args)
        out = args.out or runner.default_out(experiment.name, preset)
        check_writable_folder(Path(out), "--out")
        members_from = args.members or out.parent / runner.default_out(source.name, preset).name
        source_argv = _source_argv(argv)
        source_args = parser(experiment, source).parse_args([*source_argv, "--out", str(members_from)])
        members = runner.run_parsed(source, source_args, source_argv)
        return work(args, out, members_from, members) if members else {}


def write_results(experiment: runner.Experiment, argv: list[str], args: argparse.Namespace, members: dict,
                  members_from: Path, out: Path, started: float, seeds: list[int], **results) -> dict:  # fmt: skip
    """results.json of an experiment built on `members`: what every such document records, then `results`."""
    document = {
        "experiment": experiment.name,
        "title": experiment.title,
        "command": runner.recorded_command(experiment.name, argv),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "complete": True,
        "preset": {**PRESETS[runner.preset_name(args)].to_json(), "description": members["preset"]["description"],
                   "max_steps": members["preset"].get("max_steps")},
        "seeds": seeds,
        "members_from": str(members_from),
        **results,
        "wall_seconds": time.perf_counter() - started,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomically(out / "results.json", json.dumps(document, indent=1) + "\n")
    return document
