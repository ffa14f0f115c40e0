"""The shared experiment runner: settings × seeds -> run directories -> results.json, table.md, figures.

An experiment script declares an `Experiment` (its settings as TrainConfig overrides per label, its table
columns and figures) and calls `run_experiment(EXPERIMENT, argv)`. The runner

- builds one TrainConfig per (setting, seed) from the preset (`experiments.presets`) and the command line;
- trains each with `knifejax.fit` in its own run directory `OUT/runs/<setting>/seed<k>`: a run finished
  there before is skipped, an interrupted one resumes where it stopped (fit resumes from its last
  checkpoint), and a finished run with the identical configuration in a sibling experiment folder (e.g.
  sweep_lr's constant-rate runs, seen from sweep_scheduler) is reused instead of trained again;
- writes OUT/results.json (settings, configs, per-run per-epoch history, test metrics, wall time, the
  preset), OUT/table.md (mean ± std over seeds) and the figures (PNG);
- keeps XLA's compiled steps in a persistent cache (`~/.cache/knifejax/jax`), so a run that compiles the
  same step again (another seed, a resumed run, the evaluation step of every run) loads it instead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from knifejax.models.pretrained import PretrainedUnavailableError
from knifejax.models.registry import split_model_name
from knifejax.train.config import TrainConfig
from knifejax.train.loop import fit, model_summary
from knifejax.train.run import RunDir, build_model, image_size

from experiments.presets import PRESETS, Preset, describe
from experiments.tables import Table, write_table

COMPILE_CACHE = Path(os.environ.get("KNIFEJAX_CACHE", Path.home() / ".cache" / "knifejax")) / "jax"
# TrainConfig fields that change how a run is fed, not what it computes: ignored when matching runs.
FEED_ONLY = ("workers", "cache_dir")


@dataclass(frozen=True)
class Experiment:
    """One experiment of the study, declared.

    settings: preset -> {label: TrainConfig overrides}, in the order tables and legends list them.
    figures: functions (results, out_dir) -> path of the PNG written; see `experiments.figures`.
    notes: the choices made where the study is silent, printed under the table.
    """

    name: str
    title: str
    about: str
    settings: Callable[[Preset], dict[str, dict]]
    table: Table
    figures: tuple[Callable[[dict, Path], Path], ...] = ()
    notes: tuple[str, ...] = ()
    study_reference: str = ""  # what the study reported, for the table


@dataclass
class PlannedRun:
    setting: str
    seed: int
    config: TrainConfig
    path: Path


# --------------------------------------------------------------------------------------------- command line


def parser(experiment: Experiment) -> argparse.ArgumentParser:
    module = f"experiments.{experiment.name}"
    examples = f"""examples:
  python -m {module}                        # quick preset: synthetic knives, Lite0, minutes on a 2-core CPU
  python -m {module} --preset smoke         # seconds: checks every step runs
  python -m {module} --seeds 3              # mean ± std over 3 seeds in the table, bands in the figures
  python -m {module} --list                 # print the runs it would train, train nothing
  python -m {module} --preset study --data train.csv --val-data test.csv --root knives/ \\
      --pretrained tf_efficientnet_b0=tf_efficientnet_b0.pth   # the study's settings, offline weights

Running the same command again skips the runs already finished in --out and resumes an interrupted one.
Presets:
""" + "\n".join(f"  {p.name:6s} {p.summary}" for p in PRESETS.values())
    p = argparse.ArgumentParser(
        prog=f"python -m {module}",
        description=f"{experiment.title}. {experiment.about}",
        epilog=examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--preset", choices=tuple(PRESETS),
                   help="scale of the runs (default: quick without --data, study with --data)")
    p.add_argument("--out", type=Path, help=f"output folder (default: runs/experiments/{experiment.name}, "
                   f"or runs/experiments/{experiment.name}-PRESET for the smoke and study presets)")
    p.add_argument("--seeds", type=int, default=1, metavar="N", help="seeds 0..N-1 per setting (default: 1)")
    data = p.add_argument_group("data (default: the preset's synthetic knives)")
    data.add_argument("--data", metavar="SPEC", help="training data: a CSV (Id,Label), an image folder, "
                      "tfds:NAME[:SPLIT], or synthetic")
    data.add_argument("--val-data", metavar="SPEC", help="validation data evaluated every epoch (the study used "
                      "its test.csv); default with --data: a stratified 10%% of the training data")
    data.add_argument("--test-data", metavar="SPEC", help="test data, evaluated once at the end of each run")
    data.add_argument("--root", metavar="DIR", help="folder the CSV paths are relative to (default: the CSV's)")
    model = p.add_argument_group("model")
    model.add_argument("--pretrained", action="append", default=[], metavar="NAME=FILE",
                       help="a local timm checkpoint for architecture NAME, used instead of the packaged or hub "
                       "weights (repeatable), e.g. tf_efficientnet_b0=b0.pth")
    model.add_argument("--model", metavar="NAME", help="architecture of every run instead of the preset's")
    run = p.add_argument_group("running")
    run.add_argument("--workers", type=int, default=0, help="data-loader worker processes per run (default: 0)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars (one line per epoch still)")
    run.add_argument("--list", action="store_true", help="print the planned runs and their state, train nothing")
    run.add_argument("--no-reuse", action="store_true",
                     help="do not reuse identical finished runs from sibling experiment folders")
    run.add_argument("--cache-dir", metavar="DIR",
                     help="cache of decoded images (default: ~/.cache/knifejax/decoded)")
    run.add_argument("--compile-cache", metavar="DIR|off", default=str(COMPILE_CACHE),
                     help=f"persistent cache of compiled XLA steps (default: {COMPILE_CACHE}; 'off' disables it)")
    return p


def _pretrained_files(entries: list[str]) -> dict[str, str]:
    files = {}
    for entry in entries:
        name, sep, path = entry.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--pretrained takes NAME=FILE (e.g. tf_efficientnet_b0=b0.pth), got {entry!r}")
        if not Path(path).is_file():
            raise SystemExit(f"--pretrained {entry}: no such file {path}")
        files[split_model_name(name)[0]] = str(Path(path).resolve())
    return files


def default_out(name: str, preset: str) -> Path:
    return Path("runs") / "experiments" / (name if preset == "quick" else f"{name}-{preset}")


# ------------------------------------------------------------------------------------------------- planning


def common_fields(args: argparse.Namespace) -> dict:
    """TrainConfig fields the command line sets for every run."""
    fields = {}
    if args.data is not None:
        fields.update(data=args.data, val_data=args.val_data, test_data=args.test_data, root=args.root)
    else:
        given = (("val_data", args.val_data), ("test_data", args.test_data), ("root", args.root))
        fields.update({k: v for k, v in given if v is not None})
    fields["workers"] = args.workers
    if args.cache_dir is not None:
        fields["cache_dir"] = args.cache_dir
    if args.model is not None:
        fields["model"] = args.model
    return fields


def with_pretrained_file(cfg: TrainConfig, files: dict[str, str]) -> TrainConfig:
    architecture = split_model_name(cfg.model)[0]
    if cfg.pretrained is not None and architecture in files:
        return cfg.replace(pretrained=files[architecture])
    return cfg


def plan(experiment: Experiment, preset: Preset, args: argparse.Namespace, out: Path) -> list[PlannedRun]:
    common, files = common_fields(args), _pretrained_files(args.pretrained)
    runs = []
    for label, overrides in experiment.settings(preset).items():
        for seed in range(args.seeds):
            cfg = with_pretrained_file(preset.config(**common, **overrides, seed=seed), files)
            runs.append(PlannedRun(label, seed, cfg, out / "runs" / slug(label) / f"seed{seed}"))
    return runs


def varied_fields(experiment: Experiment, preset: Preset) -> frozenset[str]:
    """The TrainConfig fields some setting of `experiment` overrides."""
    return frozenset(key for overrides in experiment.settings(preset).values() for key in overrides)


def slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9=.+-]+", "_", label).strip("_")


def same_run(a: TrainConfig, b: TrainConfig) -> bool:
    return not a.differences(b, ignore=FEED_ONLY)


def is_finished(path: Path, cfg: TrainConfig) -> bool:
    """Every epoch logged and, when the run has test data, its test metrics written (fit's last act)."""
    run = RunDir(path)
    if not run.config.exists():
        return False
    if cfg.test_data is not None and not run.test_metrics.exists():
        return False
    return len(run.history()) >= cfg.epochs


def find_reusable(cfg: TrainConfig, out: Path) -> Path | None:
    """A finished run with this exact configuration in an experiment folder beside `out`, if any."""
    if not out.parent.is_dir():
        return None
    for config in sorted(out.parent.glob("*/runs/*/*/config.json")):
        if config.parents[2] == out:
            continue
        try:
            other = TrainConfig.load(config)
        except (ValueError, TypeError, json.JSONDecodeError):
            continue
        if same_run(other, cfg) and is_finished(config.parent, cfg):
            return config.parent
    return None


def check_no_conflict(runs: list[PlannedRun]) -> None:
    """Fail before training anything if a run directory holds a run of another configuration."""
    conflicts = []
    for run in runs:
        config = RunDir(run.path).config
        if config.exists():
            changed = TrainConfig.load(config).differences(run.config, ignore=FEED_ONLY)
            if changed:
                conflicts.append(f"{run.path}: {'; '.join(changed)}")
    if conflicts:
        raise SystemExit(
            "these run directories hold runs of other settings (another preset or other flags?):\n  "
            + "\n  ".join(conflicts[:10])
            + "\nGive another --out, or delete them to start over."
        )


# -------------------------------------------------------------------------------------------------- running


@contextlib.contextmanager
def compile_cache(folder: str) -> Iterator[None]:
    """Keep XLA executables in `folder` for the duration (restoring the previous setting afterwards).

    Measured on the 2-core CPU: a Lite0 train step compiled in a fresh process took 14-16 s, loaded from
    this cache 3.4 s (tracing and lowering remain); the evaluation step, identical in every run of an
    experiment, 1.5 s -> 0.6 s. Steps differing only in the learning rate still compile each: the rate is a
    constant inside the step.
    """
    if folder == "off":
        yield
        return
    import jax
    from jax.experimental.compilation_cache import compilation_cache as cc

    previous = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs)
    Path(folder).mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    cc.reset_cache()
    try:
        yield
    finally:
        jax.config.update("jax_compilation_cache_dir", previous[0])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", previous[1])
        cc.reset_cache()


def _runner_file(path: Path) -> Path:
    return path / "runner.json"


def _spent(path: Path) -> float:
    """Wall seconds the runner already spent on this run (before an interruption)."""
    try:
        return float(json.loads(_runner_file(path).read_text())["wall_seconds"])
    except (FileNotFoundError, KeyError, ValueError):
        return 0.0


def _record(path: Path, seconds: float, finished: bool) -> None:
    if path.is_dir():
        _runner_file(path).write_text(json.dumps({"wall_seconds": seconds, "finished": finished}) + "\n")


def _summarise_model(rd: RunDir) -> dict:
    """model.json of a run trained before runs wrote one: built again from its configuration (no weights)."""
    cfg = TrainConfig.load(rd.config)
    model = build_model(cfg, cfg.num_classes or len(rd.read_classes()), initial_weights=False)
    summary = model_summary(model, cfg, image_size(cfg, model.pretrained_cfg))
    rd.write_model_summary(summary)
    return summary


def _run_result(run: PlannedRun, source: Path, status: str) -> dict:
    rd = RunDir(source)
    test = json.loads(rd.test_metrics.read_text()) if rd.test_metrics.exists() else None
    model = json.loads(rd.model_summary.read_text()) if rd.model_summary.exists() else _summarise_model(rd)
    history = rd.history()
    wall = _spent(source) or sum(h["train_seconds"] + h["eval_seconds"] for h in history)
    return {
        "setting": run.setting,
        "seed": run.seed,
        "run_dir": str(source),
        "status": status,
        "wall_seconds": wall,
        "history": history,
        "test": test,
        "model": model,
    }


def say(message: str, progress: bool) -> None:
    if progress:
        from tqdm.auto import tqdm

        tqdm.write(message)
    else:
        print(message, flush=True)


def _summary_line(result: dict) -> str:
    last = result["history"][-1]
    test = f", test MAP@5 {result['test']['map@5']:.3f}" if result["test"] else ""
    return (f"    train loss {last['train_loss']:.4f}, val MAP@5 {last['val_map@5']:.3f}{test}, "
            f"{_duration(result['wall_seconds'])}")  # fmt: skip


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def execute(runs: list[PlannedRun], out: Path, *, progress: bool, reuse: bool, on_result=None) -> list[dict]:
    results = []
    for i, run in enumerate(runs, start=1):
        head = f"[{i}/{len(runs)}] {run.setting}, seed {run.seed}"
        if is_finished(run.path, run.config):
            result = _run_result(run, run.path, "finished before")
            say(f"{head}: finished before in {run.path}, skipped", progress)
        elif reuse and not RunDir(run.path).config.exists() and (found := find_reusable(run.config, out)):
            result = _run_result(run, found, "reused")
            say(f"{head}: the same run finished in {found}, reused", progress)
        else:
            resuming, new = RunDir(run.path).latest.exists(), not run.path.exists()
            say(f"{head}: {'resuming' if resuming else 'training'} in {run.path}", progress)
            spent, started, finished = _spent(run.path), time.perf_counter(), False
            try:
                with warnings.catch_warnings():  # a fresh classifier for our classes is the point, not news
                    warnings.filterwarnings("ignore", message=".*classifier keeps its fresh initialisation")
                    fit(run.config, run.path, progress=progress, log=lambda m: say(f"    {m}", progress))
                finished = True
            except PretrainedUnavailableError as error:
                if new:  # nothing trained: leave no directory that would refuse the same run with a weights file
                    shutil.rmtree(run.path, ignore_errors=True)
                architecture = split_model_name(run.config.model)[0]
                raise SystemExit(f"{error}\nWith the experiment scripts: --pretrained {architecture}=FILE") from None
            finally:
                _record(run.path, spent + time.perf_counter() - started, finished)
            result = _run_result(run, run.path, "resumed" if resuming else "trained")
        say(_summary_line(result), progress)
        results.append(result)
        if on_result is not None:
            on_result(results)
    return results


# -------------------------------------------------------------------------------------------------- outputs


def results_document(experiment: Experiment, preset: Preset, base: TrainConfig, runs: list[PlannedRun],
                     results: list[dict], argv: list[str], seeds: int, wall: float) -> dict:  # fmt: skip
    settings = {}
    for run in runs:
        if run.setting not in settings:
            settings[run.setting] = {
                "overrides": experiment.settings(preset)[run.setting],
                "config": run.config.to_json(),
            }
    return {
        "experiment": experiment.name,
        "title": experiment.title,
        "command": f"python -m experiments.{experiment.name} " + " ".join(argv),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "complete": len(results) == len(runs),
        "preset": {**preset.to_json(), "description": describe(preset, base, varied_fields(experiment, preset))},
        "seeds": list(range(seeds)),
        "settings": settings,
        "runs": results,
        "wall_seconds": wall,
    }


def write_outputs(experiment: Experiment, document: dict, out: Path, draw: bool = True) -> list[Path]:
    """results.json always; with `draw`, once every run is in, table.md and the figures too."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(_finite(document), indent=1) + "\n")
    written = [out / "results.json"]
    if draw and document["complete"]:
        written.append(write_table(experiment, document, out / "table.md"))
        for figure in experiment.figures:
            written.append(figure(document, out))
    return written


def _finite(value):
    """NaN/inf -> None, so results.json is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def run_experiment(experiment: Experiment, argv: list[str] | None = None) -> dict:
    """Parse `argv`, train what is missing, write results.json, table.md and figures; returns the results."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_parsed(experiment, parser(experiment).parse_args(argv), argv)


def preset_name(args: argparse.Namespace) -> str:
    """--preset, else study when real data is given, else quick."""
    return args.preset or ("study" if args.data is not None else "quick")


def run_parsed(experiment: Experiment, args: argparse.Namespace, argv: list[str]) -> dict:
    """`run_experiment` with the command line already parsed (`argv`: as given, for the record); {} with --list."""
    if args.seeds < 1:
        raise SystemExit("--seeds must be at least 1")
    chosen = preset_name(args)
    preset = PRESETS[chosen]
    if args.model is not None and any("model" in o for o in experiment.settings(preset).values()):
        raise SystemExit(f"--model does not apply to {experiment.name}: its settings choose the architectures")
    out = args.out or default_out(experiment.name, chosen)
    runs = plan(experiment, preset, args, out)
    base = with_pretrained_file(preset.config(**common_fields(args)), _pretrained_files(args.pretrained))

    if args.list:
        print(f"{experiment.title}: {len(runs)} runs, preset {chosen}, into {out}")
        for run in runs:
            state = ("finished" if is_finished(run.path, run.config) else
                     "partial" if RunDir(run.path).config.exists() else "new")  # fmt: skip
            print(f"  {run.setting:24s} seed {run.seed}  {state:8s} {run.path}")
        print("\n" + describe(preset, base, varied_fields(experiment, preset)))
        return {}

    check_no_conflict(runs)
    progress = not args.no_progress
    print(f"{experiment.title}: {len(runs)} runs ({len(runs) // args.seeds} settings × {args.seeds} seed(s)), "
          f"preset {chosen}, into {out}", flush=True)  # fmt: skip
    started = time.perf_counter()

    def save(partial: list[dict]) -> None:
        document = results_document(experiment, preset, base, runs, partial, argv, args.seeds,
                                    time.perf_counter() - started)  # fmt: skip
        write_outputs(experiment, document, out, draw=False)

    with compile_cache(args.compile_cache):
        results = execute(runs, out, progress=progress, reuse=not args.no_reuse, on_result=save)
    document = results_document(experiment, preset, base, runs, results, argv, args.seeds, time.perf_counter() - started)
    written = write_outputs(experiment, document, out)
    print(f"done in {_duration(document['wall_seconds'])}; wrote " + ", ".join(str(p) for p in written), flush=True)
    return document
