"""Where the knifejax train (or inference) step spends its time, by kind of XLA operation.

    python -m benchmarks.profile_step --model resnet18 [--mode train|infer] [--batch-size 32] [--image-size 224]
        [--json PATH]

Runs the step of `benchmarks.throughput` (same model, input, loss and Adam) under `jax.profiler.trace` and
sums the duration of every XLA operation the trace records over all threads, grouped by the operation's kind
(the fusion name without its number: `transpose_copy_fusion`, `ynn_fusion`, ...), per step. On a CPU the
threads' sum can exceed the wall time (two cores) or fall short of it (idle cores).

What the trace does not show: XLA:CPU runs a convolution as an asynchronous Eigen task; the trace records only
its dispatch (`convolution.N`, a few ms), not the work on Eigen's threads. The wall time minus what the trace
accounts for, per core, bounds the convolutions from below; per-layer timings are in docs/performance.md.

The trace records the whole process: run it in a process of its own (as this command does), or the work of
other threads (a data loader, an earlier computation still running) is counted with the step's.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import tempfile
import time
from pathlib import Path

from benchmarks.throughput import add_step_arguments, knifejax_step
from knifejax.atomic_write import write_text_atomically


def profile(args) -> tuple[float, collections.Counter, collections.Counter]:
    """(wall s per step, thread-s per step by operation kind, calls per step by kind) over `args.steps` steps."""
    import jax

    step, _, _ = knifejax_step(args)
    for _ in range(2):  # compile, then one step so that allocations are warm
        step()
    with tempfile.TemporaryDirectory() as trace_dir:
        start = time.perf_counter()
        with jax.profiler.trace(trace_dir):
            for _ in range(args.steps):
                step()
        wall = (time.perf_counter() - start) / args.steps
        trace = next(Path(trace_dir).rglob("*.xplane.pb"))
        data = jax.profiler.ProfileData.from_file(str(trace))
    seconds, calls = collections.Counter(), collections.Counter()
    for plane in data.planes:
        for line in plane.lines:
            if line.name == "python":
                continue
            for event in line.events:
                if "::" in event.name or event.name.startswith("end: "):
                    continue  # runtime spans (ThunkExecutor::Execute encloses the operations, thread-pool
                    # bookkeeping) and "end:" instants; XLA's operation names never contain "::"
                kind = re.sub(r"\.\d+$", "", event.name)
                seconds[kind] += event.duration_ns / 1e9 / args.steps
                calls[kind] += 1 / args.steps
    return wall, seconds, calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_step_arguments(parser)
    parser.add_argument("--steps", type=int, default=2, help="profiled steps")
    parser.add_argument("--top", type=int, default=12, help="operation kinds to list")
    parser.add_argument("--json", type=Path, help="also write every kind's thread-s and calls per step here")
    args = parser.parse_args()
    wall, seconds, calls = profile(args)
    traced = sum(seconds.values())
    print(f"{args.model} {args.mode}, batch {args.batch_size}, {args.image_size} px, {args.precision}: "
          f"{wall:.2f} s per step ({args.batch_size / wall:.1f} img/s); traced operations {traced:.2f} thread-s")  # fmt: skip
    print(f"{'thread-s':>9} {'share':>6} {'calls':>6}  operation kind")
    for kind, s in seconds.most_common(args.top):
        print(f"{s:9.3f} {s / traced:6.1%} {calls[kind]:6.0f}  {kind}")
    if args.json:
        kinds = {kind: {"thread_s": seconds[kind], "calls": calls[kind]} for kind in seconds}
        write_text_atomically(args.json, json.dumps({"wall_s": wall, "kinds": kinds}, indent=1) + "\n")


if __name__ == "__main__":
    main()
