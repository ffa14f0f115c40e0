"""The GPU measurements still open, as one prepared session: each a child process, in priority order, all sharing
one persistent XLA compile cache, so that what one compiled the next loads. What does not fit in `--budget`
seconds is skipped and said so; what was measured is kept whatever happens after it.

(a) b0_20_epochs: the timed 20-epoch `efficientnet_b0` run (bf16, batch 64, 9,984 synthetic images at 224 px,
    9,024 of them training) with `--data-placement device`. Reported apart: start-up and data preparation (process start to the
    placement line, the decode-once cache included), compilation (epoch 1's training time less a steady epoch's),
    and the steady state (epochs 2-20's training time, times 20/19; target <= 60 s).
(b) data_path_b0: `benchmarks.data_path` fed / in-memory for `efficientnet_b0` bf16 batch 64, device placement.
(c) data_path_resnet18: the same for `resnet18` bf16 batch 256.
(d) maxpool_resnet18: `benchmarks.throughput` for `resnet18` train bf16 batch 256 (torch beside it when
    installed): the slice max-pooling on a GPU, against the earlier row of docs/performance.md.
(e) sweep_side_by_side and (f) sweep_alone: the study preset's `sweep_lr` (EfficientNet-B0, batch 32, 224 px,
    fp32) on the 192-class synthetic set, 2 epochs per rate, with its five rates side by side (`--vectorize`) and
    then each alone (`--no-vectorize`); B0's starting weights are a seeded model saved as the weights file (no
    download). Reported: each sweep's wall time, and its final validation MAP@5 per rate.

    python -m benchmarks.gpu_session --out gpu_results              # on the GPU: (a)-(d) in ~12 minutes
    python -m benchmarks.gpu_session --out gpu_results --only sweep_side_by_side,sweep_alone   # (e)-(f), ~9 min
    python -m benchmarks.gpu_session --out /tmp/rehearsal --tiny --budget 1800   # toy sizes, on any machine

Each step's output is in OUT/NAME.log, each line stamped with the seconds since the step started; OUT/summary.json
holds every step's outcome and numbers.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from knifejax.atomic_write import write_text_atomically

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Step:
    name: str
    command: list[str]
    estimate_s: int  # expected seconds on an H200 with a cold compile cache; a step is skipped when less remains


def steps(out: Path, tiny: bool) -> list[Step]:
    py = [sys.executable, "-m"]
    torch = "knifejax,torch" if all(importlib.util.find_spec(p) for p in ("torch", "timm")) else "knifejax"
    if tiny:
        run = ["--synthetic-classes", "4", "--synthetic-per-class", "8", "--image-size", "32", "--batch-size", "8",
               "--epochs", "3"]  # fmt: skip
        b0 = ["--image-size", "32", "--batch-size", "8", "--classes", "4", "--per-class", "4", "--steps", "2",
              "--repeats", "1"]  # fmt: skip
        resnet = b0
        throughput = ["--image-size", "32", "--batch-size", "8", "--steps", "2", "--warmup", "1"]
    else:
        run = ["--synthetic-classes", "192", "--synthetic-per-class", "52", "--image-size", "224", "--batch-size",
               "64", "--epochs", "20", "--workers", str(min(14, os.cpu_count() or 1))]  # fmt: skip
        b0 = ["--image-size", "224", "--batch-size", "64", "--steps", "50", "--repeats", "5"]
        resnet = ["--image-size", "224", "--batch-size", "256", "--per-class", "8", "--steps", "30", "--repeats", "5"]
        throughput = ["--image-size", "224", "--batch-size", "256", "--steps", "15", "--warmup", "3"]
    weights = out / "weights"
    sweep = ["--preset", "study", "--data", "synthetic", "--weights-dir", str(weights), "--no-progress", "--no-reuse",
             "--compile-cache", str(out / "jax-cache")]  # fmt: skip
    if tiny:
        sweep += ["--synthetic-classes", "4", "--synthetic-per-class", "8", "--image-size", "32", "--batch-size", "8",
                  "--epochs", "1"]  # fmt: skip
    else:
        sweep += ["--synthetic-classes", "192", "--synthetic-per-class", "52", "--epochs", "2",
                  "--workers", str(min(14, os.cpu_count() or 1))]  # fmt: skip
    seeded_b0 = ("import knifejax as kj, pathlib, sys; pathlib.Path(sys.argv[1]).parent.mkdir(exist_ok=True); "
                 "kj.save_timm_weights(kj.create_model('tf_efficientnet_b0.aa_in1k', seed=0), sys.argv[1])")  # fmt: skip
    return [
        Step("b0_20_epochs", [*py, "knifejax", "train", "--run", str(out / "b0_20_epochs"), "--model", "efficientnet_b0",
                              "--precision", "bf16", "--data-placement", "device", "--cache-dir", str(out / "cache"),
                              "--no-progress", *run], 330),  # fmt: skip
        Step("data_path_b0", [*py, "benchmarks.data_path", "--model", "efficientnet_b0", "--precision", "bf16",
                              "--placement", "device", "--json", str(out / "data_path_b0.json"), *b0], 150),  # fmt: skip
        Step("data_path_resnet18", [*py, "benchmarks.data_path", "--model", "resnet18", "--precision", "bf16",
                                    "--placement", "device", "--json", str(out / "data_path_resnet18.json"),
                                    *resnet], 60),  # fmt: skip
        Step("maxpool_resnet18", [*py, "benchmarks.throughput", "--model", "resnet18", "--mode", "train", "--precision",
                                  "bf16", "--rounds", "1", "--frameworks", torch,
                                  "--json", str(out / "maxpool_resnet18.json"), *throughput], 150),  # fmt: skip
        Step("weights_b0", [sys.executable, "-c", seeded_b0, str(weights / "tf_efficientnet_b0.aa_in1k.safetensors")],
             20),  # fmt: skip
        Step("sweep_side_by_side", [*py, "experiments.sweep_lr", "--out", str(out / "sweep_side_by_side"),
                                    "--vectorize", *sweep], 240),  # fmt: skip
        Step("sweep_alone", [*py, "experiments.sweep_lr", "--out", str(out / "sweep_alone"), "--no-vectorize",
                             *sweep], 300),  # fmt: skip
    ]


def run_step(step: Step, out: Path, env: dict, timeout: float) -> dict:
    """Run `step`, killed after `timeout` seconds, with its output stamped line by line into OUT/NAME.log:
    {"outcome": return code or "timeout", "seconds", "lines": [(seconds, line)]}."""
    started = time.perf_counter()
    lines = []
    with subprocess.Popen(step.command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as child:  # fmt: skip
        timer = threading.Timer(timeout, child.kill)
        timer.start()
        for line in child.stdout:
            lines.append((time.perf_counter() - started, line.rstrip("\n")))
            print(f"[{step.name} {lines[-1][0]:7.1f} s] {lines[-1][1]}", flush=True)
        outcome = child.wait()
        timed_out = not timer.is_alive()
        timer.cancel()
    write_text_atomically(out / f"{step.name}.log", "".join(f"{t:8.2f} {text}\n" for t, text in lines))
    return {"outcome": "timeout" if timed_out else outcome, "seconds": time.perf_counter() - started, "lines": lines}


def summarise_run(run: Path, lines: list[tuple[float, str]], seconds: float) -> dict:
    """Start-up and data preparation, compilation and steady state of the timed run, from its log and metrics."""
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [e["train_seconds"] for e in epochs]
    placed = next((t for t, text in lines if text.startswith("data placement:")), None)
    steady_epoch = sum(train[1:]) / max(len(train) - 1, 1)
    return {
        "placement_line": next((text for _, text in lines if text.startswith("data placement:")), None),
        "startup_and_data_preparation_s": placed,
        "compile_s": train[0] - steady_epoch if len(train) > 1 else None,
        "steady_state_s": steady_epoch * len(train),  # epochs 2..E scaled to E epochs
        "steady_img_s": statistics.median(e["images_per_s"] for e in epochs[1:]) if len(epochs) > 1 else None,
        "eval_s": sum(e["eval_seconds"] for e in epochs),
        "epochs": len(epochs),
        "wall_s": seconds,
        "final_val_map5": epochs[-1]["val_map@5"],
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_session", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--out", type=Path, required=True, help="folder of the logs, results and the compile cache")
    p.add_argument("--tiny", action="store_true", help="toy sizes: rehearse the session on a CPU")
    p.add_argument("--budget", type=float, default=720, help="seconds for all steps; a step whose estimate exceeds "
                   "what is left is skipped (default: 720)")  # fmt: skip
    p.add_argument("--only", metavar="NAMES", help="comma-separated step names to run (default: all, in order; "
                   "sweep_side_by_side and sweep_alone make B0's weights file first)")  # fmt: skip
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    chosen = None if args.only is None else set(args.only.split(","))
    if chosen and chosen & {"sweep_side_by_side", "sweep_alone"}:
        chosen.add("weights_b0")
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(args.out / "jax-cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5")  # fmt: skip
    started = time.perf_counter()
    summary = {}
    for step in steps(args.out, args.tiny):
        if chosen is not None and step.name not in chosen:
            continue
        left = args.budget - (time.perf_counter() - started)
        if left < step.estimate_s:
            summary[step.name] = {"outcome": f"skipped: {left:.0f} s left of the budget, estimate {step.estimate_s} s"}
        else:
            result = run_step(step, args.out, env, timeout=left)
            lines = result.pop("lines")
            if step.name == "b0_20_epochs" and result["outcome"] == 0:
                result |= summarise_run(args.out / step.name, lines, result["seconds"])
            elif step.name.startswith("sweep_") and result["outcome"] == 0:
                document = json.loads((args.out / step.name / "results.json").read_text())
                result |= {"sweep_wall_s": document["wall_seconds"],
                           "val_map5": {r["setting"]: r["history"][-1]["val_map@5"] for r in document["runs"]}}  # fmt: skip
            elif step.name.startswith("data_path") and result["outcome"] == 0:
                measured = json.loads((args.out / f"{step.name}.json").read_text())
                result |= {"img_s": measured["img_s"], "fed_over_in_memory": measured["fed_over_in_memory"]}
            summary[step.name] = result
        write_text_atomically(args.out / "summary.json", json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
