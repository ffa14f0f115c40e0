"""Side-by-side throughput of knifejax and timm/PyTorch: the same model, input, loss and optimizer.

    python -m benchmarks.throughput --model resnet18 --mode train --batch-size 32 --image-size 224 [--json PATH]
    python -m benchmarks.throughput --all [--json-dir benchmarks/results]   # the five families, train and infer
    python -m benchmarks.throughput --table-only                           # docs/performance.md from the JSONs

The work is the same in every framework: `knifejax.create_model(name, num_classes=192)` and
`timm.create_model(name, num_classes=192)` from random init; one batch of random normalised float32 images
drawn from a fixed seed (NHWC for JAX, the same numbers NCHW for torch) with labels in [0, 192); softmax
cross-entropy; Adam, lr 1e-4. Train mode is a forward, backward and Adam update per step, infer mode an
eval-mode forward. knifejax runs its own steps from `knifejax.train.steps`: the donated train step, and the
eval step that `knifejax.inference.Predictor` scores with. torch runs the timm model eagerly and, as a third framework, through `torch.compile`.

Each framework runs in a child process of its own (this module again, with --child, importing only that
framework), never two at once, and the parent alternates them over R rounds (knifejax, torch, torch.compile,
knifejax, ...): a process of its own keeps one framework's thread pools, allocator and caches from slowing
the other, and alternation spreads the load of a shared machine over all frameworks alike. In a child the
first step is timed apart as "compile s" (XLA compilation for knifejax, Dynamo/Inductor from an empty cache
for torch.compile, one-off allocations and cuDNN autotuning for eager torch); W warm-up steps follow,
untimed, then N timed steps, each waited for (`block_until_ready`, `torch.cuda.synchronize`). Images/s is
the batch over the median of all timed steps of all rounds.

Peak memory is the child's maximum resident set on CPU (the interpreter and the compiler included) and the
allocator's peak on GPU. FLOPs per step are XLA's cost analysis of the knifejax step before optimisation (a
GPU's compiled program hides its convolutions in cuDNN calls that the analysis does not count); with a
peak rate (the table below on a known GPU, or --peak-tflops) each framework's model FLOP utilisation is that
count per second of its median step over the peak.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FRAMEWORKS = ("knifejax", "torch", "torch.compile")
FAMILIES = ("efficientnet_b0", "resnet18", "mobilenetv3_large_100", "skresnet18", "vit_small_patch16_224")
NUM_CLASSES, SEED, LR = 192, 0, 1e-4
BEGIN, END = "<!-- throughput-table:begin -->", "<!-- throughput-table:end -->"
# torch's channels_last layout, measured on the 2-core CPU (eager, batch 32, 224 px, img/s contiguous ->
# channels_last): infer resnet18 34 -> 43, efficientnet_b0 27 -> 44, mobilenetv3_large_100 72 -> 122; train
# 6.1 -> 6.7, 1.5 -> 2.4, 3.1 -> 5.5. No gain for skresnet18 (infer 32.1 -> 31.7, train 2.91 -> 2.90) nor for
# ViT, whose activations are tokens, not images (infer 5.6 -> 5.8, noise): these keep torch's default layout.
CONTIGUOUS_FAMILIES = ("skresnet", "vit_")
# Dense tensor-core peaks in TFLOP/s from NVIDIA's H100 and H200 datasheets (the H200 has the H100 SXM's
# compute; the datasheets' headline figures assume 2:4 sparsity and are twice these). fp32 is TF32, which
# JAX uses by default for float32 convolutions and matmuls on these GPUs, and torch here too (cuDNN's
# default, and `set_float32_matmul_precision("high")` below); the non-tensor fp32 peak is 67 (SXM).
PEAK_TFLOPS = {
    "H100 PCIe": {"bf16": 756, "fp32": 378},
    "H100": {"bf16": 989, "fp32": 495},
    "H200": {"bf16": 989, "fp32": 495},
}
PACKAGES = ("jax", "jaxlib", "flax", "optax", "torch", "timm", "knifejax")


def random_batch(batch: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 NHWC images ~ N(0, 1) (as normalised pixels are) and int32 labels in [0, NUM_CLASSES)."""
    rng = np.random.default_rng(SEED)
    return rng.standard_normal((batch, size, size, 3), np.float32), rng.integers(0, NUM_CLASSES, batch, np.int32)


def timed_steps(step, warmup: int, steps: int) -> list[float]:
    """Seconds of each of `steps` calls of `step` (which waits for its own results), after `warmup` calls."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def knifejax_step(args):
    """knifejax's step for `args` (model, mode, batch size, image size, precision) as a callable that runs one
    step and waits for it; also the jitted function and its first inputs (for XLA's cost analysis)."""
    import jax
    import optax
    from flax import nnx

    import knifejax
    from knifejax.train.steps import TrainState, init_state, make_eval_step, make_train_step

    model = knifejax.create_model(args.model, num_classes=NUM_CLASSES, seed=SEED)
    x, y = map(jax.device_put, random_batch(args.batch_size, args.image_size))
    if args.mode == "train":
        optimizer = optax.adam(LR)
        graphdef, state = init_state(model, optimizer)
        jitted = make_train_step(graphdef, optimizer, normalize=None, precision=args.precision)
    else:  # as knifejax.inference.Predictor scores: the eval step on the parameters and the rest, no optimizer
        model.eval()
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        state = TrainState(params, rest, None, None)
        jitted = make_eval_step(graphdef, precision=args.precision)
    first_inputs = (state, x, y) if args.mode == "train" else (state, x)

    def step():
        nonlocal state
        out = jitted(state, x, y) if args.mode == "train" else jitted(state, x)
        if args.mode == "train":
            state = out[0]
        jax.block_until_ready(out)

    return step, jitted, first_inputs


def run_knifejax(args) -> dict:
    import jax

    step, jitted, first_inputs = knifejax_step(args)
    start = time.perf_counter()
    step()
    compile_s = time.perf_counter() - start
    step_s = timed_steps(step, args.warmup, args.steps)
    # XLA's estimate from the step's HLO before optimisation, analysed by the CPU backend whatever the device:
    # a GPU's compiled program runs its convolutions as cuDNN custom calls, whose FLOPs its analysis leaves out.
    cpu = jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])
    specs = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=cpu), first_inputs)
    cost = jitted.lower(*specs).cost_analysis() or {}
    device = jax.devices()[0]
    return {
        "compile_s": compile_s,
        "step_s": step_s,
        "peak_mem_bytes": device.memory_stats()["peak_bytes_in_use"] if args.device == "gpu" else max_rss_bytes(),
        "flops_per_step": float(cost["flops"]) if "flops" in cost else None,
        "device_name": device.device_kind if args.device == "gpu" else cpu_name(),
        # XLA_FLAGS with the flag `benchmarks` adds on CPU (knifejax.apply_xla_cpu_flags); LD_PRELOAD names a replacement allocator if any
        "setup": {"xla_flags": os.environ.get("XLA_FLAGS"), "ld_preload": os.environ.get("LD_PRELOAD")},
    }


def run_torch(args, compile_model: bool) -> dict:
    import torch
    import torch.nn.functional as F

    from tests.reference import import_timm, nchw

    timm = import_timm()
    torch.set_num_threads(os.cpu_count())
    torch.set_flush_denormal(True)
    device = torch.device("cuda" if args.device == "gpu" else "cpu")
    if device.type == "cuda":  # TF32 and autotuned convolutions (in the first step), as XLA does on GPU
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.benchmark = True
    layout = torch.contiguous_format if args.model.startswith(CONTIGUOUS_FAMILIES) else torch.channels_last
    torch.manual_seed(SEED)
    model = timm.create_model(args.model, num_classes=NUM_CLASSES).to(device, memory_format=layout)
    images, labels = random_batch(args.batch_size, args.image_size)
    x = nchw(images).to(device).contiguous(memory_format=layout)
    y = torch.from_numpy(labels).long().to(device)
    forward = torch.compile(model) if compile_model else model
    bf16 = args.precision == "bf16"

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    if args.mode == "train":
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=LR)

        def step():
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(forward(x), y)
            loss.backward()
            optimizer.step()
            sync()
    else:
        model.eval()

        def step():
            with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                forward(x)
            sync()

    sync()
    start = time.perf_counter()
    step()
    compile_s = time.perf_counter() - start
    step_s = timed_steps(step, args.warmup, args.steps)
    gpu = device.type == "cuda"
    return {
        "compile_s": compile_s,
        "step_s": step_s,
        "peak_mem_bytes": torch.cuda.max_memory_allocated() if gpu else max_rss_bytes(),
        "setup": {
            "memory_format": "channels_last" if layout is torch.channels_last else "contiguous",
            "threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "ld_preload": os.environ.get("LD_PRELOAD"),
        },
        "device_name": torch.cuda.get_device_name() if gpu else cpu_name(),
    }


def probe_gpu(torch_too: bool) -> dict:
    """Whether JAX (and torch, when it runs too) sees a GPU: the parent's choice of device."""
    import jax

    gpu = jax.default_backend() == "gpu"
    if gpu and torch_too:
        import torch

        gpu = torch.cuda.is_available()
    return {"gpu": gpu}


def child_main(args) -> None:
    """Run one framework's measurement and print its result as one JSON line (or an `error`)."""
    runners = {
        "knifejax": lambda: run_knifejax(args),
        "torch": lambda: run_torch(args, compile_model=False),
        "torch.compile": lambda: run_torch(args, compile_model=True),
        "probe": lambda: probe_gpu(args.frameworks != "knifejax"),
    }
    try:
        result = runners[args.child]()
    except Exception as error:  # reported, not raised: a torch.compile failure must not end the benchmark
        traceback.print_exc()
        first_line = str(error).strip().partition("\n")[0]
        result = {"error": f"{type(error).__name__}: {first_line[:300]}"}
    print(json.dumps(result), flush=True)


def spawn(child: str, args, device: str, extra_env: dict | None = None) -> dict:
    """Run `child` in a fresh interpreter and parse its JSON line; a crash becomes an `error`."""
    command = [sys.executable, "-m", "benchmarks.throughput", "--child", child, "--device", device]
    for flag in ("model", "mode", "batch_size", "image_size", "precision", "steps", "warmup", "frameworks"):
        command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    env = {**os.environ, **(extra_env or {}), **({"JAX_PLATFORMS": "cpu"} if device == "cpu" else {})}
    if device == "cpu" and child.startswith("torch"):
        # libgomp's default spin-waiting made torch's steps 1.4x (resnet18 infer, batch 32, 224 px) to 27x
        # (batch 2, 32 px) slower while another process held one of the 2 cores; sleeping threads do not.
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # A fresh Inductor (and Triton) cache per child: torch.compile compiles from scratch in every round, as
    # knifejax does, whatever earlier runs left in the default cache.
    with tempfile.TemporaryDirectory(prefix="throughput-") as cache:
        env.update(TORCHINDUCTOR_CACHE_DIR=cache, TRITON_CACHE_DIR=f"{cache}/triton")
        proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    result = json.loads(lines[-1]) if lines else {"error": f"exit status {proc.returncode}, no result"}
    if "error" in result:
        print(f"{child} failed: {result['error']}\n{proc.stderr[-3000:]}", file=sys.stderr)
    return result


def pick_device(args) -> str:
    """GPU when JAX and torch both see one (probed in a child, without taking the GPU's memory), else CPU."""
    if not (Path("/dev/nvidia0").exists() or shutil.which("nvidia-smi")):
        return "cpu"
    probe = spawn("probe", args, "auto", {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"})
    return "gpu" if probe.get("gpu") else "cpu"


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown CPU")


def versions() -> dict[str, str | None]:
    installed = {dist.metadata["Name"].lower(): dist.version for dist in importlib.metadata.distributions()}
    return {package: installed.get(package) for package in PACKAGES}


def key(framework: str) -> str:
    return framework.replace(".", "_")


def run_rounds(args, frameworks: list[str], device: str) -> tuple[dict[str, list[dict]], dict[str, str]]:
    """Each framework's child results over R rounds, run one at a time in turn; a framework that fails is
    recorded with its error and not run again."""
    runs, errors = {framework: [] for framework in frameworks}, {}
    for round_index in range(args.rounds):
        for framework in [f for f in frameworks if f not in errors]:
            result = spawn(framework, args, device)
            if "error" in result:
                errors[framework] = result["error"]
                continue
            runs[framework].append(result)
            median = statistics.median(result["step_s"])
            print(
                f"round {round_index + 1}/{args.rounds} {framework}: {median:.3f} s/step, first step "
                f"{result['compile_s']:.1f} s",
                file=sys.stderr,
            )
    return {f: r for f, r in runs.items() if f not in errors}, errors


def summarise(args, device: str, runs: dict[str, list[dict]], errors: dict[str, str]) -> dict:
    """The JSON record: setup, per-framework figures (`<framework>_img_s`, ...; None where it did not run
    or failed, with `<framework>_error`), the ratios to torch eager and torch.compile, per-round medians."""
    first = next((results[0] for results in runs.values() if results), {})
    gpu = first.get("device_name", "") if device == "gpu" else ""
    flops = runs["knifejax"][0]["flops_per_step"] if runs.get("knifejax") else None
    summary = {
        "model": args.model,
        "mode": args.mode,
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "precision": args.precision,
        "device": device,
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "gpu": gpu or None,
        "steps": args.steps,
        "warmup": args.warmup,
        "flops_per_step": flops,
        "peak_tflops": args.peak_tflops or next((p[args.precision] for k, p in PEAK_TFLOPS.items() if k in gpu), None),
        "rounds": [{f: statistics.median(r[i]["step_s"]) for f, r in runs.items()} for i in range(args.rounds)],
        "versions": versions(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    for framework in FRAMEWORKS:
        results, name = runs.get(framework), key(framework)
        median_s = statistics.median(s for r in results for s in r["step_s"]) if results else None
        summary[f"{name}_img_s"] = args.batch_size / median_s if results else None
        summary[f"{name}_compile_s"] = statistics.median(r["compile_s"] for r in results) if results else None
        summary[f"{name}_peak_mem_bytes"] = max(r["peak_mem_bytes"] for r in results) if results else None
        summary[f"{name}_error"] = errors.get(framework)
        if results and "setup" in results[0]:
            summary[f"{name}_setup"] = results[0]["setup"]
        if results and flops and summary["peak_tflops"]:
            summary[f"{name}_mfu"] = flops / median_s / (summary["peak_tflops"] * 1e12)
    jax_img_s = summary["knifejax_img_s"]
    for ratio, other in (("ratio", "torch_img_s"), ("ratio_compile", "torch_compile_img_s")):
        summary[ratio] = jax_img_s / summary[other] if jax_img_s and summary[other] else None
    return summary


def gib(n: float | None) -> str:
    return f"{n / 2**30:.2f} GiB" if n else "—"


def figure(result: dict, framework: str, field: str, fmt: str) -> str:
    """One framework's `field` formatted, "error" where it failed, "—" where it did not run."""
    if result.get(f"{key(framework)}_error"):
        return "error"
    value = result.get(f"{key(framework)}_{field}")
    return format(value, fmt) if value is not None else "—"


def machine(result: dict) -> str:
    where = result["gpu"] or f"{result['cpu']}, {result['cpu_count']} cores"
    v = result["versions"]
    return f"{where}; jax {v['jax']}, jaxlib {v['jaxlib']}, torch {v['torch']}, timm {v['timm']}"


def print_table(result: dict, frameworks: list[str]) -> None:
    r = result
    print(f"{r['model']}, {r['mode']}, batch {r['batch_size']}, {r['image_size']} px, {r['precision']}, {r['device']}")
    flops = f"; XLA FLOPs/step {r['flops_per_step']:.3g}" if r["flops_per_step"] else ""
    print(f"{machine(r)}\n{len(r['rounds'])} round(s) x {r['steps']} timed steps{flops}")
    mfu = r["peak_tflops"] is not None
    print(f"{'framework':15}{'img/s':>10}{'vs torch':>10}{'compile s':>11}{'peak mem':>12}" + ("     MFU" * mfu))
    for framework in frameworks:
        name = key(framework)
        if r[f"{name}_error"]:
            print(f"{framework:15}  error: {r[f'{name}_error']}")
            continue
        ratio = f"{r[f'{name}_img_s'] / r['torch_img_s']:.2f}x" if r["torch_img_s"] else "—"
        line = f"{framework:15}{r[f'{name}_img_s']:10.2f}{ratio:>10}{r[f'{name}_compile_s']:11.1f}"
        print(line + f"{gib(r[f'{name}_peak_mem_bytes']):>12}" + (f"{r.get(f'{name}_mfu', 0):8.1%}" * mfu))


def markdown_table(results: list[dict]) -> str:
    """The generated block of docs/performance.md: where, when and how it was measured, one row per JSON."""
    order = {name: i for i, name in enumerate(FAMILIES)}
    results = sorted(results, key=lambda r: (r["gpu"] or "", order.get(r["model"], len(order)), r["model"], r["mode"]))
    dates = sorted({r["date"][:10] for r in results})
    setups = {
        f"batch {r['batch_size']}, {r['image_size']} px, {len(r['rounds'])} round(s) x {r['steps']} steps"
        for r in results
    }
    when = dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}"
    lines = [
        f"Generated by `python -m benchmarks.throughput` (do not edit by hand) on {when}: "
        f"{'; '.join(sorted({machine(r) for r in results}))}; {'; '.join(sorted(setups))}. "
        "error: the framework failed (see its JSON); —: not run.",
        "",
        "| device | model | mode | precision | knifejax img/s | torch img/s | torch.compile img/s | knifejax / torch "
        "| knifejax / torch.compile | compile s: knifejax, torch.compile | peak memory: knifejax, torch |",
        "|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        ratios = [f"{r[ratio]:.2f}×" if r[ratio] else "—" for ratio in ("ratio", "ratio_compile")]
        compile_s = [figure(r, f, "compile_s", ".1f") for f in ("knifejax", "torch.compile")]
        img_s = [figure(r, f, "img_s", ".2f") for f in FRAMEWORKS]
        memory = [gib(r[f"{f}_peak_mem_bytes"]) for f in ("knifejax", "torch")]
        setup = [r["gpu"] or "CPU", f"`{r['model']}`", r["mode"], r["precision"]]
        cells = setup + img_s + ratios + [", ".join(compile_s), ", ".join(memory)]
        lines.append(f"| {' | '.join(cells)} |")
    failed = [(r, f) for r in results for f in FRAMEWORKS if r.get(f"{key(f)}_error")]
    errors = [f"- `{r['model']}` {r['mode']}, {f}: {r[f'{key(f)}_error']}" for r, f in failed]
    return "\n".join(lines + (["", "Errors:", "", *errors] if errors else []))


def replace_block(text: str, block: str) -> str:
    """`text` with everything between the BEGIN and END markers replaced by `block`."""
    begin, end = text.find(BEGIN), text.find(END)
    if begin < 0 or end < begin:
        raise ValueError(f"the markers {BEGIN} and {END} must both be there, in that order")
    return f"{text[: begin + len(BEGIN)]}\n{block}\n{text[end:]}"


def write_docs(json_dir: Path, docs: Path) -> None:
    results = [json.loads(path.read_text()) for path in sorted(json_dir.glob("*.json"))]
    if not results:
        raise SystemExit(f"no JSON results in {json_dir}: run with --all (or --json into it) first")
    from knifejax.atomic_write import write_text_atomically

    try:
        write_text_atomically(docs, replace_block(docs.read_text(), markdown_table(results)))
    except ValueError as error:
        raise SystemExit(f"{docs}: {error}") from None
    print(f"wrote the table of {len(results)} configuration(s) into {docs}")


def check_setup(frameworks: list[str], models: list[str]) -> None:
    """Errors a user can act on, before any child starts."""
    import knifejax

    unknown = [f for f in frameworks if f not in FRAMEWORKS]
    if unknown:
        raise SystemExit(f"unknown framework(s) {unknown}; choose from {', '.join(FRAMEWORKS)}")
    known = knifejax.list_models()
    for model in models:
        if model.partition(".")[0] not in known:
            raise SystemExit(f"unknown model {model!r}; knifejax has: {', '.join(known)}")
    if any(f != "knifejax" for f in frameworks) and not all(importlib.util.find_spec(p) for p in ("torch", "timm")):
        raise SystemExit('torch and timm are needed for the comparison: pip install -e ".[test]"')


def run_one(args, frameworks: list[str], device: str, json_path: Path | None) -> None:
    result = summarise(args, device, *run_rounds(args, frameworks, device))
    print_table(result, frameworks)
    if json_path:
        from knifejax.atomic_write import write_text_atomically

        json_path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(json_path, json.dumps(result, indent=2) + "\n")


def add_step_arguments(parser: argparse.ArgumentParser) -> None:
    """The step's configuration, as `knifejax_step` reads it (also `benchmarks.profile_step`'s)."""
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--mode", choices=("train", "infer"), default="train")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_step_arguments(parser)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after the first")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of all frameworks")
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    parser.add_argument("--peak-tflops", type=float, help="the device's peak for the FLOP utilisation")
    parser.add_argument("--json", type=Path, help="write the result here")
    parser.add_argument("--all", action="store_true", help="the five families, train and infer, then the docs table")
    parser.add_argument("--table-only", action="store_true", help="only regenerate the docs table from --json-dir")
    parser.add_argument("--json-dir", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "performance.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--device", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args)
    if args.table_only:
        return write_docs(args.json_dir, args.docs)
    frameworks = args.frameworks.split(",")
    check_setup(frameworks, list(FAMILIES) if args.all else [args.model])
    device = pick_device(args)
    if not args.all:
        return run_one(args, frameworks, device, args.json)
    for model in FAMILIES:
        for mode in ("train", "infer"):
            args.model, args.mode = model, mode
            name = f"{model}_{mode}_b{args.batch_size}_s{args.image_size}_{args.precision}.json"
            run_one(args, frameworks, device, args.json_dir / name)
    write_docs(args.json_dir, args.docs)


if __name__ == "__main__":
    main()
