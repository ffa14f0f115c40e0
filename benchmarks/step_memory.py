"""How much memory one train step of each model of the study takes: XLA's account of the compiled step (arguments,
outputs not aliased to them, temporaries), the figure `knifejax.fit` checks against the device before the first
step. It compiles and runs nothing, so it answers on a CPU what a device would need for the same program: an
accelerator's compiler fuses differently, so read the figures as an estimate for a GPU.

    python -m benchmarks.step_memory                       # the study's models, batch 32, fp32 and bf16
    python -m benchmarks.step_memory --batch-size 16 --precision bf16 --models vit_small_patch8_224.dino
"""

from __future__ import annotations

import argparse

from knifejax import study
from knifejax.xla_cpu import apply_xla_cpu_flags

# The study's sizes: 224 px for every CNN and for two ViTs, 384 px for the ViT-S/16 pretrained at that size.
VITS = (("vit_small_patch16_384.augreg_in21k_ft_in1k", 384), ("vit_small_patch8_224.dino", 224),
        ("vit_base_patch32_clip_224.laion2b_ft_in12k_in1k", 224))  # fmt: skip
STUDY_MODELS = (*((a.model, study.RECIPE["image_size"]) for a in study.ARCHITECTURES), *VITS)


def step_memory(model: str, size: int, batch_size: int, precision: str, num_classes: int = 192) -> int | None:
    """Bytes one train step of `model` (the study's recipe, fresh weights) needs per device; None when the backend
    gives no account."""
    from knifejax.train.config import TrainConfig
    from knifejax.train.loop import build_optimizer, recipe_numbers, step_memory_bytes
    from knifejax.train.run import build_model, normalization
    from knifejax.train.sharding import data_mesh
    from knifejax.train.steps import init_state, make_train_step

    cfg = TrainConfig.study(model=model, image_size=size, batch_size=batch_size, precision=precision, pretrained=None)
    network = build_model(cfg, num_classes)
    steps = cfg.epochs * 300  # any length: the schedule's numbers are inputs of the step, not part of its program
    optimizer = build_optimizer(cfg, network, steps)
    graphdef, state = init_state(network, optimizer, (), recipe_numbers(cfg, steps))
    step = make_train_step(graphdef, optimizer, normalize=normalization(cfg.norm, network.pretrained_cfg),
                           precision=precision)  # fmt: skip
    return step_memory_bytes(step, state, cfg, size, data_mesh())


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.step_memory", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--models", nargs="+", metavar="NAME.TAG", help="(default: the study's eight, at its sizes)")
    p.add_argument("--image-size", type=int, help="for --models (default: 224)")
    p.add_argument("--batch-size", type=int, default=study.RECIPE["batch_size"])
    p.add_argument("--precision", nargs="+", choices=("fp32", "bf16"), default=["fp32", "bf16"])
    args = p.parse_args(argv)
    apply_xla_cpu_flags()
    models = [(m, args.image_size or 224) for m in args.models] if args.models else list(STUDY_MODELS)
    rows = []
    print(f"| model | image size | batch | {' | '.join(args.precision)} |")
    print("|---|---|---|" + "---|" * len(args.precision))
    for model, size in models:
        needed = {precision: step_memory(model, size, args.batch_size, precision) for precision in args.precision}
        rows.append({"model": model, "image_size": size, "batch_size": args.batch_size, "bytes": needed})
        cells = " | ".join("—" if n is None else f"{n / 2**30:.1f} GiB" for n in needed.values())
        print(f"| {model} | {size} | {args.batch_size} | {cells} |", flush=True)
    return rows


if __name__ == "__main__":
    main()
