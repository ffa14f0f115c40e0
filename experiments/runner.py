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

from knifejax.atomic_write import write_text_atomically
from knifejax.errors import CommandParser, ConfigError, reported_errors
from knifejax.models.pretrained import PretrainedUnavailableError
from knifejax.models.weights_folder import full_name, is_packaged, missing_weights_message, weights_in_folder  # fmt: skip
from knifejax.output_paths import check_writable_folder
from knifejax.train.config import TrainConfig
from knifejax.train.flags import add_config_flags, flag, given_fields
from knifejax.train.loop import fit_many, model_summary, side_by_side_groups
from knifejax.train.run import RunDir, build_model, image_size

from experiments.presets import PRESETS, Preset, describe
from experiments.tables import Table, write_table

COMPILE_CACHE = Path(os.environ.get("KNIFEJAX_CACHE", Path.home() / ".cache" / "knifejax")) / "jax"
RESUMES = "the same command resumes: finished runs are kept, the interrupted one continues from its last checkpoint"
# TrainConfig fields that change how a run is fed, not what it computes: ignored when matching runs.
FEED_ONLY = ("workers", "data_placement", "cache_dir", "weights_dir")


# Options that change how a command runs, not what it computes (with the number of values each takes): left out
# of the command a results file records, which says how to reproduce the numbers, not where this machine cached.
RUN_ONLY_OPTIONS = {"--no-progress": 0, "--debug": 0, "--no-reuse": 0, "--compile-cache": 1}


def recorded_command(name: str, argv: list[str]) -> str:
    """`python -m experiments.NAME ARGS` without `RUN_ONLY_OPTIONS`."""
    kept, skip = [], 0
    for arg in argv:
        option = arg.split("=", 1)[0]
        if skip:
            skip -= 1
        elif option in RUN_ONLY_OPTIONS:
            skip = RUN_ONLY_OPTIONS[option] if "=" not in arg else 0
        else:
            kept.append(arg)
    return " ".join(["python -m", f"experiments.{name}", *kept])


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
  python -m {module} --epochs 2 --list      # print the runs it would train (2 epochs each), train nothing
  python -m {module} --preset study --data train.csv --val-data test.csv --root knives/ \\
      --weights-dir weights/   # the study's setting, its weights from weights/NAME.TAG.safetensors

--val-data test.csv validates on the test images every epoch, as the study did: choosing an epoch or a setting
by it selects on the test set. Every training flag below applies to every run; a flag for a field the
experiment's settings vary (e.g. --lr in sweep_lr) is refused. The table names the flags given.
Running the same command again skips the runs already finished in --out and resumes an interrupted one.
Presets:
""" + "\n".join(f"  {p.name:6s} {p.summary}" for p in PRESETS.values())
    p = CommandParser(
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
    run = p.add_argument_group("running")
    run.add_argument("--no-progress", action="store_true", help="no progress bars (one line per epoch still)")
    run.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    run.add_argument("--list", action="store_true", help="print the planned runs, their state and the pretrained "
                     "weights they need, train nothing")
    run.add_argument("--no-reuse", action="store_true",
                     help="do not reuse identical finished runs from sibling experiment folders")
    run.add_argument("--vectorize", action=argparse.BooleanOptionalAction, default=None,
                     help="train the runs that differ only in their recipe's numbers (rate, schedule, momentum, weight "
                     "decay, label smoothing) side by side as one program; --no-vectorize trains each alone (default: "
                     "side by side on a GPU or TPU, alone on a CPU, where side by side measured 0.9x)")
    run.add_argument("--compile-cache", metavar="DIR|off", default=str(COMPILE_CACHE),
                     help=f"persistent cache of compiled XLA steps (default: {COMPILE_CACHE}; 'off' disables it)")
    add_config_flags(p, exclude=("seed",), defaults="the preset's")
    return p


def default_out(name: str, preset: str) -> Path:
    return Path("runs") / "experiments" / (name if preset == "quick" else f"{name}-{preset}")


# ------------------------------------------------------------------------------------------------- planning


def common_fields(args: argparse.Namespace) -> dict:
    """TrainConfig fields the command line sets for every run."""
    fields = given_fields(args)
    if "data" in fields:  # the preset's synthetic validation and test sets belong to its synthetic training set
        fields = {"val_data": None, "test_data": None, "root": None, **fields}
    return fields


def uniform_overrides(experiment: Experiment, preset: Preset) -> dict:
    """Overrides every setting of `experiment` makes alike (e.g. compare_vit's from-scratch rate): the
    experiment's own base, which the command line may change."""
    settings = list(experiment.settings(preset).values())
    return {k: v for k, v in settings[0].items() if all(k in o and o[k] == v for o in settings[1:])}


def varied_fields(experiment: Experiment, preset: Preset) -> frozenset[str]:
    """The TrainConfig fields the settings of `experiment` set apart (not alike in every setting)."""
    uniform = uniform_overrides(experiment, preset)
    return frozenset(key for overrides in experiment.settings(preset).values() for key in overrides) - set(uniform)


def check_flags(experiment: Experiment, preset: Preset, given: dict) -> None:
    """Refuse a flag for a field the settings vary, and a weights file where the settings train several models."""
    varied = varied_fields(experiment, preset)
    clashing = sorted(set(given) & varied)
    if clashing:
        flags = ", ".join(flag(k) for k in clashing)
        raise ConfigError(f"{flags} does not apply to {experiment.name} (preset {preset.name}): its settings choose "
                         f"{'it' if len(clashing) == 1 else 'them'} per row; drop the flag")  # fmt: skip
    if "model" in varied and (given.get("weights") or given.get("pretrained") not in (None, "default")):
        raise ConfigError(f"{experiment.name} trains several architectures, and a weights FILE fits one: put each "
                         "model's weights in a folder as NAME.TAG.safetensors and give --weights-dir DIR")  # fmt: skip


def plan(experiment: Experiment, preset: Preset, args: argparse.Namespace, out: Path) -> list[PlannedRun]:
    common, uniform = common_fields(args), uniform_overrides(experiment, preset)
    runs = []
    for label, overrides in experiment.settings(preset).items():
        for seed in range(args.seeds):
            varying = {k: v for k, v in overrides.items() if k not in uniform}
            cfg = preset.config(**{**uniform, **common, **varying}, seed=seed)
            runs.append(PlannedRun(label, seed, cfg, out / "runs" / slug(label) / f"seed{seed}"))
    return runs


def base_config(experiment: Experiment, preset: Preset, args: argparse.Namespace) -> TrainConfig:
    """What every run of the experiment starts from: the preset, the settings' common overrides, the flags."""
    return preset.config(**{**uniform_overrides(experiment, preset), **common_fields(args)})


def pretrained_needs(runs: list[PlannedRun]) -> tuple[list[str], str | None]:
    """(models whose 'default' pretrained weights the runs load, the weights folder they come from)."""
    models = list(dict.fromkeys(full_name(r.config.model) for r in runs if r.config.pretrained == "default"))
    return models, runs[0].config.weights_dir if runs else None


def check_weights(runs: list[PlannedRun]) -> None:
    """With a weights folder: fail before training anything when it lacks a file some run needs, listing all."""
    models, folder = pretrained_needs(runs)
    message = missing_weights_message(models, folder) if folder is not None and models else None
    if message:
        raise ConfigError(message)


def weights_lines(runs: list[PlannedRun]) -> list[str]:
    """For --list: each pretrained model the runs load and where its weights come from."""
    models, folder = pretrained_needs(runs)
    lines = []
    for model in models:
        found = weights_in_folder(model, folder) if folder is not None else None
        where = (found if found else "the installed package" if is_packaged(model) else
                 "MISSING from the weights folder" if folder is not None else
                 "the Hugging Face cache or hub (offline: --weights-dir DIR)")  # fmt: skip
        lines.append(f"  {model:40s} {where}")
    return ["pretrained weights:", *lines] if lines else []


def slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9=.+-]+", "_", label).strip("_")


def same_run(a: TrainConfig, b: TrainConfig) -> bool:
    return not a.differences(b, ignore=FEED_ONLY)


def is_finished(path: Path, cfg: TrainConfig) -> bool:
    """Every epoch logged (or, with `max_steps`, the epoch that reached it) and, when the run has test data, its
    test metrics written (fit's last act)."""
    run = RunDir(path)
    if not run.config.exists():
        return False
    if cfg.test_data is not None and not run.test_metrics.exists():
        return False
    history = run.history()
    bounded = cfg.max_steps is not None and bool(history) and history[-1]["step"] >= cfg.max_steps
    return bounded or len(history) >= cfg.epochs


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
        error = ConfigError(
            f"{len(conflicts)} run directories hold runs of other settings (another preset or other flags?), the "
            f"first: {conflicts[0]}; give another --out, or delete them to start over"
        )
        error.details = tuple(f"  {conflict}" for conflict in conflicts)
        raise error


# -------------------------------------------------------------------------------------------------- running


@contextlib.contextmanager
def compile_cache(folder: str) -> Iterator[None]:
    """Keep XLA executables in `folder` for the duration (restoring the previous setting afterwards).

    Measured on the 2-core CPU: a Lite0 train step compiled in a fresh process took 14-16 s, loaded from
    this cache 3.4 s (tracing and lowering remain); the evaluation step, identical in every run of an
    experiment, 1.5 s -> 0.6 s. Runs that differ only in the recipe's numbers (rate, schedule, momentum, weight
    decay, label smoothing: inputs of the step, `knifejax.train.optim.Hyperparameters`) share the train step's
    program too, so only the first of them compiles it.
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
        write_text_atomically(_runner_file(path), json.dumps({"wall_seconds": seconds, "finished": finished}) + "\n")


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
            f"{format_duration(result['wall_seconds'])}")  # fmt: skip


def format_duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def side_by_side(runs: list[PlannedRun], vectorize: bool) -> list[list[int]]:
    """Which of `runs` (all to be trained) train together: with `vectorize`, those that differ only in their
    recipe's numbers (`knifejax.train.loop.side_by_side_groups`) and stand at the same point (all new, or all
    interrupted with a checkpoint step in common); otherwise each alone."""
    if not vectorize:
        return [[index] for index in range(len(runs))]
    groups = []
    for members in side_by_side_groups([run.config for run in runs]):
        parts: list[tuple[frozenset[int], list[int]]] = []  # (the steps every run of the part kept, its runs)
        for index in members:
            steps = frozenset(RunDir(runs[index].path).kept_steps())
            for number, (common, part) in enumerate(parts):
                if (common & steps) if steps else not common:  # new runs together; started ones sharing a step
                    parts[number] = (common & steps, [*part, index])
                    break
            else:
                parts.append((steps, [index]))
        groups += [part for _, part in parts]
    return sorted(groups)


def vectorizes(args: argparse.Namespace) -> bool:
    """--vectorize as given; by default side by side only off the CPU. A CPU is busy with one run's step already: there
    the members' step took 0.97x the time of theirs alone, and the group's larger compile made the quick sweep_lr
    0.9x as fast end to end (docs/performance.md)."""
    if args.vectorize is not None:
        return args.vectorize
    import jax

    return jax.default_backend() != "cpu"


def execute(runs: list[PlannedRun], out: Path, *, progress: bool, reuse: bool, vectorize: bool = True,
            on_result=None) -> list[dict]:  # fmt: skip
    """Train what `runs` lack (finished runs are skipped, identical finished runs elsewhere reused); the results in
    the order of `runs`, handed to `on_result` as they come in."""
    results: dict[int, dict] = {}

    def done(index: int, result: dict) -> None:
        say(_summary_line(result), progress)
        results[index] = result
        if on_result is not None:
            on_result([results[i] for i in sorted(results)])

    to_train = []
    for i, run in enumerate(runs):
        head = f"[{i + 1}/{len(runs)}] {run.setting}, seed {run.seed}"
        if is_finished(run.path, run.config):
            say(f"{head}: finished before in {run.path}, skipped", progress)
            done(i, _run_result(run, run.path, "finished before"))
        elif reuse and not RunDir(run.path).config.exists() and (found := find_reusable(run.config, out)):
            say(f"{head}: the same run finished in {found}, reused", progress)
            done(i, _run_result(run, found, "reused"))
        else:
            to_train.append(i)
    for group in side_by_side([runs[i] for i in to_train], vectorize):
        indices = [to_train[k] for k in group]
        members = [runs[i] for i in indices]
        resuming = [RunDir(run.path).latest.exists() for run in members]
        new = [not run.path.exists() for run in members]
        for i, run, again in zip(indices, members, resuming):
            say(f"[{i + 1}/{len(runs)}] {run.setting}, seed {run.seed}: {'resuming' if again else 'training'} in "
                f"{run.path}" + (f" (side by side with {len(members) - 1} more)" if len(members) > 1 else ""),
                progress)  # fmt: skip
        spent, started, finished = [_spent(run.path) for run in members], time.perf_counter(), False
        try:
            with warnings.catch_warnings():  # a fresh classifier for our classes is the point, not news
                warnings.filterwarnings("ignore", message=".*classifier keeps its fresh initialisation")
                fit_many([run.config for run in members], [run.path for run in members], progress=progress,
                         log=lambda m: say(f"    {m}", progress))  # fmt: skip
            finished = True
        except PretrainedUnavailableError as error:
            for run, was_new in zip(members, new):
                if was_new:  # nothing trained: leave no directory that would refuse the same run with a weights file
                    shutil.rmtree(run.path, ignore_errors=True)
            raise ConfigError(f"{error}; with the experiment scripts: --weights-dir DIR holding "
                              f"{full_name(members[0].config.model)}.safetensors") from None
        finally:
            share = (time.perf_counter() - started) / len(members)  # side by side, each run's share of the wall time
            for run, before in zip(members, spent):
                _record(run.path, before + share, finished)
        for i, run, again in zip(indices, members, resuming):
            done(i, _run_result(run, run.path, "resumed" if again else "trained"))
    return [results[i] for i in sorted(results)]


# -------------------------------------------------------------------------------------------------- outputs


def description(experiment: Experiment, preset: Preset, args: argparse.Namespace) -> str:
    """The preset paragraph of the experiment's table: its data, model and recipe, and the flags that changed it."""
    given = {k: v for k, v in common_fields(args).items() if k not in FEED_ONLY}
    return describe(preset, base_config(experiment, preset, args), varied_fields(experiment, preset), given)


def results_document(experiment: Experiment, preset: Preset, description: str, runs: list[PlannedRun],
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
        "command": recorded_command(experiment.name, argv),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "complete": len(results) == len(runs),
        "preset": {**preset.to_json(), "description": description, "max_steps": runs[0].config.max_steps},
        "seeds": list(range(seeds)),
        "settings": settings,
        "runs": results,
        "wall_seconds": wall,
    }


def write_outputs(experiment: Experiment, document: dict, out: Path, draw: bool = True) -> list[Path]:
    """results.json always; with `draw`, once every run is in, table.md and the figures too."""
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomically(out / "results.json", json.dumps(strict_json(document), indent=1) + "\n")
    written = [out / "results.json"]
    if draw and document["complete"]:
        written.append(write_table(experiment, document, out / "table.md"))
        for figure in experiment.figures:
            written.append(figure(document, out))
    return written


def strict_json(value):
    """NaN/inf -> None, so results.json is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    return value


def run_experiment(experiment: Experiment, argv: list[str] | None = None) -> dict:
    """Parse `argv`, train what is missing, write results.json, table.md and figures; returns the results.

    A user's mistake ends in one `knifejax: error:` line and exit 2 (`knifejax.errors`), a traceback only with
    --debug."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser(experiment).parse_args(argv)
    with reported_errors(debug=args.debug, on_interrupt=lambda: RESUMES):
        return run_parsed(experiment, args, argv)


def preset_name(args: argparse.Namespace) -> str:
    """--preset, else study when real data is given, else quick."""
    return args.preset or ("study" if args.data is not None else "quick")


def run_parsed(experiment: Experiment, args: argparse.Namespace, argv: list[str]) -> dict:
    """`run_experiment` with the command line already parsed (`argv`: as given, for the record); {} with --list."""
    if args.seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, not {args.seeds}")
    chosen = preset_name(args)
    preset = PRESETS[chosen]
    check_flags(experiment, preset, given_fields(args))
    out = args.out or default_out(experiment.name, chosen)
    runs = plan(experiment, preset, args, out)
    about = description(experiment, preset, args)

    if args.list:
        print(f"{experiment.title}: {len(runs)} runs, preset {chosen}, into {out}")
        for run in runs:
            state = ("finished" if is_finished(run.path, run.config) else
                     "partial" if RunDir(run.path).config.exists() else "new")  # fmt: skip
            print(f"  {run.setting:24s} seed {run.seed}  {state:8s} {run.path}")
        print("\n".join(["", *weights_lines(runs), "", about]))
        return {}

    check_writable_folder(Path(out), "--out")
    check_no_conflict(runs)
    check_weights(runs)
    progress = not args.no_progress
    print(f"{experiment.title}: {len(runs)} runs ({len(runs) // args.seeds} settings × {args.seeds} seed(s)), "
          f"preset {chosen}, into {out}", flush=True)  # fmt: skip
    started = time.perf_counter()

    def save(partial: list[dict]) -> None:
        document = results_document(experiment, preset, about, runs, partial, argv, args.seeds,
                                    time.perf_counter() - started)  # fmt: skip
        write_outputs(experiment, document, out, draw=False)

    with compile_cache(args.compile_cache):
        results = execute(runs, out, progress=progress, reuse=not args.no_reuse, vectorize=vectorizes(args),
                          on_result=save)  # fmt: skip
    wall = time.perf_counter() - started
    document = results_document(experiment, preset, about, runs, results, argv, args.seeds, wall)
    written = write_outputs(experiment, document, out)
    print(f"done in {format_duration(document['wall_seconds'])}; wrote " + ", ".join(str(p) for p in written), flush=True)
    return document
