"""The whole study rehearsed at its full size on this machine, from one command: every experiment's study preset
and the report, on a study-shaped data set, each run cut to its first few optimizer steps.

    python -m experiments.rehearse_study rehearsal/                  # --max-steps 2, the study's 9,624 + 351 images
    python -m experiments.rehearse_study rehearsal/ --only sweep_lr,compare_vit -- --workers 4

Its steps, in order, each in a process of its own (so that its wall time and peak memory are its own):
  data       rehearsal/data: the study-shaped set (`experiments.make_study_data`)
  weights    rehearsal/weights: a seeded stand-in weights file for every model the study preset loads
             (`experiments.stand_in_weights`): the real loading path, random numbers
  <each experiment of the report's order>
             its study preset with `--data data/train.csv --val-data data/test.csv --root data
             --weights-dir weights --max-steps N --cache-dir rehearsal/cache`, and the flags given after `--`,
             into rehearsal/runs/<experiment>-study; its output in rehearsal/logs/<experiment>.log
  report     rehearsal/results.md (`experiments.report --preset study`), marked a rehearsal, not results
Then rehearsal/rehearsal.md (and .json): each step's wall time and peak resident memory (of its largest process,
the step's own or one it started), the runs it trained, the checkpoints one run of each model and optimizer
leaves (its latest and its best), the disk each part takes. The same command again completes what a stop left: the data set, the missing weight files, the
unfinished runs (finished ones are skipped, interrupted ones resume); the figures are then the last start's.

An experiment that fails is named with its log's last line at the end, after the others and the report ran (one
rehearsal shows every problem); the data or the weights failing stop it at once.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

from experiments.make_study_data import STUDY_TEST_IMAGES, STUDY_TRAIN_IMAGES
from experiments.report import ORDER
from experiments.runner import default_out, format_duration
from experiments.stand_in_weights import study_models
from knifejax.atomic_write import write_text_atomically
from knifejax.errors import INTERRUPTED_EXIT, CommandParser, ConfigError, UserError, reported_errors
from knifejax.folder_lock import held
from knifejax.output_paths import check_writable_folder
from knifejax.train.run import RunDir

PRESET = "study"


class StepFailed(UserError):
    """A step's process ended with an error; the message is its log's last line."""


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def run_step(name: str, argv: list[str], log: Path) -> dict:
    """Run `python -m ...argv` with its output in `log`: its wall time, peak memory (wait4: the largest resident set
    of the process and of every process it waited for) and exit status."""
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"{name}: python -m {' '.join(argv)}", flush=True)
    started = time.perf_counter()
    with open(log, "w") as output:
        process = subprocess.Popen([sys.executable, "-m", *argv], stdout=output, stderr=subprocess.STDOUT)
        try:
            _, status, usage = os.wait4(process.pid, 0)
        except KeyboardInterrupt:  # the step got the same Ctrl-C: let it save what it has, and count its time
            _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    print(f"{name}: {'done' if process.returncode == 0 else 'failed'} in {format_duration(seconds)}, peak memory "
          f"{_size(usage.ru_maxrss * 1024)}", flush=True)  # fmt: skip
    return {"step": name, "seconds": seconds, "peak_rss_bytes": usage.ru_maxrss * 1024, "exit": process.returncode}


def failure(name: str, measured: dict, log: Path) -> StepFailed:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    last = lines[-1].strip() if lines else "no output"
    return StepFailed(f"{name} stopped (exit {measured['exit']}): {last} — its whole output: {log}")


def with_earlier_starts(steps: list[dict], earlier: list[dict]) -> list[dict]:
    """Each step's cost over every start of the rehearsal: wall times added, the peak the highest, the runs as the
    last start that trained any found them; steps of earlier starts that this one did not reach are kept."""
    before = {step["step"]: step for step in earlier}
    merged = []
    for step in steps:
        old = before.pop(step["step"], None)
        if old is not None:
            step = {**step, "seconds": old["seconds"] + step["seconds"], "starts": old.get("starts", 1) + 1,
                    "peak_rss_bytes": max(old["peak_rss_bytes"], step["peak_rss_bytes"])}  # fmt: skip
            if "runs" in old and "trained" not in step.get("runs", {}):  # this start found them done
                step["runs"] = old["runs"]
        merged.append(step)
    return merged + list(before.values())


def experiment_argv(name: str, out: Path, max_steps: int, flags: list[str]) -> list[str]:
    data = out / "data"
    return [f"experiments.{name}", "--data", str(data / "train.csv"), "--val-data", str(data / "test.csv"),
            "--root", str(data), "--weights-dir", str(out / "weights"), "--max-steps", str(max_steps),
            "--cache-dir", str(out / "cache"), "--out", str(runs_folder(out, name)), "--no-progress",
            *flags]  # fmt: skip


def runs_folder(out: Path, name: str) -> Path:
    return out / "runs" / default_out(name, PRESET).name


def runs_of(folder: Path) -> dict:
    """What an experiment's results.json says of its runs: how many trained, reused, ..."""
    results = folder / "results.json"
    if not results.exists():
        return {}
    runs = json.loads(results.read_text()).get("runs", [])
    return dict(Counter(run["status"] for run in runs if "status" in run))  # gradcam's runs are explained, not run


def checkpoint_sizes(out: Path) -> list[dict]:
    """Per model, optimizer and image size: the disk one run's checkpoints take (median over its runs)."""
    sizes = defaultdict(list)
    for config in sorted((out / "runs").glob("*/runs/*/seed*/config.json")):
        cfg = json.loads(config.read_text())
        checkpoints = config.parent / "checkpoints"
        if RunDir(config.parent).trained():  # a run refused before its first step has none to weigh
            sizes[(cfg["model"], cfg["optimizer"], cfg["image_size"])].append(folder_bytes(checkpoints))
    return [{"model": model, "optimizer": optimizer, "image_size": size, "runs": len(found),
             "checkpoint_bytes": int(statistics.median(found))}
            for (model, optimizer, size), found in sorted(sizes.items())]  # fmt: skip


def summary_page(record: dict) -> str:
    lines = [
        "# Study rehearsal: measured", "",
        f"`{record['command']}` — every run cut to its first {record['max_steps']} optimizer steps, seeded stand-in "
        "weights: the figures are the machine's costs, not results. A step started more than once shows its time "
        "over all starts.", "",
        f"Machine: {record['machine']}.", "",
        "| step | wall time | peak memory (largest process) | runs |", "|---|---|---|---|",
    ]  # fmt: skip
    for step in record["steps"]:
        runs = ", ".join(f"{n} {status}" for status, n in step.get("runs", {}).items()) or "—"
        starts = f" ({step['starts']} starts)" if step.get("starts", 1) > 1 else ""
        failed = (", interrupted" if step["exit"] in (INTERRUPTED_EXIT, -signal.SIGINT) else
                  f", failed (exit {step['exit']})" if step["exit"] else "")  # fmt: skip
        lines.append(f"| {step['step']}{starts}{failed} | {format_duration(step['seconds'])} | {_size(step['peak_rss_bytes'])} "
                     f"| {runs} |")  # fmt: skip
    total = sum(step["seconds"] for step in record["steps"])
    lines += [f"| all | {format_duration(total)} | | |", "", "| model | optimizer | image size | runs | checkpoints of one run (latest and best) |",
              "|---|---|---|---|---|"]  # fmt: skip
    lines += [f"| {c['model']} | {c['optimizer']} | {c['image_size']} | {c['runs']} | {_size(c['checkpoint_bytes'])} |"
              for c in record["checkpoints"]]  # fmt: skip
    lines += ["", "| on disk | size |", "|---|---|"]
    lines += [f"| {part} | {_size(size)} |" for part, size in record["disk_bytes"].items()]
    return "\n".join(lines) + "\n"


def rehearse(out: Path, max_steps: int, images: int, test_images: int, max_side: int | None,
             experiments: tuple[str, ...], flags: list[str], command: str) -> dict:  # fmt: skip
    if max_steps < 1:
        raise ConfigError(f"--max-steps must be at least 1, not {max_steps}")
    check_writable_folder(out, "OUT")
    models = study_models(experiments, flags)  # also refuses a flag an experiment refuses, before anything runs
    with held(out, "rehearsed", "give another OUT"):  # two at once would write one log and the same runs
        return _rehearse(out, max_steps, images, test_images, max_side, experiments, flags, command, models)


def _rehearse(out: Path, max_steps: int, images: int, test_images: int, max_side: int | None,
              experiments: tuple[str, ...], flags: list[str], command: str, models: list[str]) -> dict:  # fmt: skip
    logs, saved = out / "logs", out / "rehearsal.json"
    earlier = _earlier_steps(saved)
    data = ["experiments.make_study_data", str(out / "data"), "--images", str(images), "--test-images",
            str(test_images), "--workers", str(os.cpu_count() or 1), "--no-progress",
            *(["--max-side", str(max_side)] if max_side else [])]  # fmt: skip
    plan = [("data", data), ("weights", ["experiments.stand_in_weights", str(out / "weights"), *models])]
    plan += [(name, experiment_argv(name, out, max_steps, flags)) for name in experiments]
    plan.append(("report", ["experiments.report", "--preset", PRESET, "--runs", str(out / "runs"), "--out",
                            str(out / "results.md")]))  # fmt: skip
    steps, failed = [], []
    for name, argv in plan:
        measured = run_step(name, argv, logs / f"{name}.log")
        if name in experiments:
            measured["runs"] = runs_of(runs_folder(out, name))
        steps.append(measured)
        record = {
            "command": command, "max_steps": max_steps,
            "machine": f"{os.cpu_count()} CPU cores, {_size(_memory_bytes())} memory",
            "steps": with_earlier_starts(steps, earlier), "checkpoints": checkpoint_sizes(out),
            "disk_bytes": {part: folder_bytes(out / part) for part in ("data", "weights", "cache", "runs")},
        }  # fmt: skip
        write_text_atomically(saved, json.dumps(record, indent=1) + "\n")
        write_text_atomically(out / "rehearsal.md", summary_page(record))
        if measured["exit"] in (INTERRUPTED_EXIT, -signal.SIGINT):  # Ctrl-C: recorded, and the rehearsal stops
            raise KeyboardInterrupt
        if measured["exit"] != 0 and name in experiments:  # the others do not need it: they are rehearsed too
            failed.append(failure(name, measured, logs / f"{name}.log"))
        elif measured["exit"] != 0:  # no data or no weights: nothing after can run
            raise failure(name, measured, logs / f"{name}.log")
    if failed:
        error = StepFailed(f"{len(failed)} of {len(experiments)} experiments failed; the first, {failed[0]}")
        error.details = tuple(f"  {each}" for each in failed)
        raise error
    return record


def main(argv: list[str] | None = None) -> dict:
    p = CommandParser(prog="python -m experiments.rehearse_study", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("out", type=Path, metavar="OUT",
                   help="the rehearsal's folder (new, or begun by the same command); flags after `--` go to every "
                   "experiment (e.g. `-- --workers 4`)")
    p.add_argument("--max-steps", type=int, default=2, metavar="N", help="optimizer steps a run (default: 2)")
    p.add_argument("--images", type=int, default=STUDY_TRAIN_IMAGES,
                   help=f"training images of the data set (default: {STUDY_TRAIN_IMAGES}, the study's)")
    p.add_argument("--test-images", type=int, default=STUDY_TEST_IMAGES,
                   help=f"its test images (default: {STUDY_TEST_IMAGES}, the study's)")
    p.add_argument("--max-side", type=int, metavar="PX", help="its photos at most PX wide (default: camera sizes)")
    p.add_argument("--only", metavar="NAMES", help=f"comma-separated experiments (default: all: {','.join(ORDER)})")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    argv = list(sys.argv[1:] if argv is None else argv)
    ours, flags = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    args = p.parse_args(ours)
    with reported_errors(debug=args.debug, on_interrupt=lambda: "the same command resumes"):
        experiments = ORDER if args.only is None else tuple(args.only.split(","))
        unknown = [name for name in experiments if name not in ORDER]
        if unknown:
            raise ConfigError(f"--only: no experiment {', '.join(map(repr, unknown))}; the experiments: {', '.join(ORDER)}")
        record = rehearse(args.out, args.max_steps, args.images, args.test_images, args.max_side,
                          tuple(name for name in ORDER if name in experiments), flags,
                          "python -m experiments.rehearse_study " + shlex.join(argv))  # fmt: skip
        print(f"wrote {args.out / 'rehearsal.md'} and the report {args.out / 'results.md'}")
        return record


def _earlier_steps(saved: Path) -> list[dict]:
    """The steps an earlier start of the rehearsal recorded (none for a first start)."""
    if not saved.exists():
        return []
    try:
        steps = json.loads(saved.read_text())["steps"]
        if all({"step", "seconds", "peak_rss_bytes", "exit"} <= step.keys() for step in steps):
            return steps
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    raise ConfigError(f"{saved} is not a record this command wrote (damaged or edited); delete it to measure from this "
                      "start on, and run the same command again")


def _memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _size(size: int) -> str:
    return f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size / 2**20:.0f} MiB"


if __name__ == "__main__":
    main()
