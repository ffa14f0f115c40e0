"""`python -m knifejax train | evaluate | predict`.

train     trains a model into a run directory (the same command again resumes it)
evaluate  prints MAP@1, MAP@5 and top-5 accuracy of a trained model on labelled data
predict   writes the top-5 classes and probabilities of each image to a CSV
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import sys
import types
import typing
from pathlib import Path

from knifejax.data.open import SPEC_HELP

EXAMPLES = """examples:
  python -m knifejax train --run runs/lite0 --pretrained default --epochs 3 --image-size 96 --synthetic-classes 32
  python -m knifejax train --run runs/b0 --model tf_efficientnet_b0 --pretrained b0.pth \\
      --data train.csv --val-data test.csv --root knives/ --preset study
  python -m knifejax evaluate --run runs/lite0 --data synthetic --synthetic-classes 32
  python -m knifejax predict --run runs/lite0 photos/ --out predictions.csv
  python -m knifejax evaluate --model resnet18 --weights model.safetensors --data test.csv --root knives/
"""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, typed and documented by the field itself; unset flags stay None."""
    from knifejax.train.config import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    groups = {}
    for f in dataclasses.fields(TrainConfig):
        group_name = f.metadata["group"]
        if group_name not in groups:
            groups[group_name] = parser.add_argument_group(group_name)
        group = groups[group_name]
        hint = hints[f.name]
        default = f.default
        choices = f.metadata.get("choices")
        help_text = f"{f.metadata['help']}" + (f", one of {', '.join(choices)}" if choices else "")
        help_text += f" (default: {default})"
        if hint is bool:
            group.add_argument(_flag(f.name), action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif f.name == "rotation":
            group.add_argument(_flag(f.name), type=float, nargs=2, metavar=("MIN", "MAX"), help=help_text)
        else:
            base = _base_type(hint)
            group.add_argument(
                _flag(f.name), type=base, choices=choices, metavar=f.name.upper(), help=help_text
            )


def _base_type(hint):
    if isinstance(hint, types.UnionType):
        hint = next(t for t in typing.get_args(hint) if t is not type(None))
    return hint


def _config_from_args(args: argparse.Namespace):
    from knifejax.train.config import TrainConfig
    from knifejax.train.run import RunDir

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if getattr(args, f.name) is not None}
    if "rotation" in given:
        given["rotation"] = tuple(given["rotation"])
    saved = RunDir(args.run).config
    if saved.exists() and args.preset is None:
        # resuming: the saved config is the base, flags given again must agree with it (checked by RunDir)
        return TrainConfig.load(saved).replace(**given)
    if args.preset == "study":
        return TrainConfig.study(**given)
    return TrainConfig(**given)


def _cmd_train(args: argparse.Namespace) -> None:
    import jax

    if args.distributed:
        jax.distributed.initialize()
    from knifejax.train.loop import fit

    fit(_config_from_args(args), args.run, progress=not args.no_progress)


def _predictor(args: argparse.Namespace):
    from knifejax.inference import Predictor

    if (args.run is None) == (args.model is None):
        raise SystemExit("give either --run DIR, or --model NAME with --weights FILE")
    if args.run is not None:
        return Predictor.from_run(args.run, args.which, args.batch_size)
    if args.weights is None:
        raise SystemExit("--model needs --weights FILE (a checkpoint with timm key names)")
    names = Path(args.classes_file).read_text().splitlines() if args.classes_file else None
    return Predictor.from_weights(args.model, args.weights, names, args.image_size, args.norm, args.batch_size)


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from knifejax.data.cache import decode_source
    from knifejax.data.open import open_source
    from knifejax.data.sources import ImageFolderSource
    from knifejax.data.validate import validate
    from knifejax.inference import align_folder_labels

    predictor = _predictor(args)
    source = open_source(
        args.data,
        split="test",
        root=args.root,
        classes_file=args.classes_file,
        synthetic_classes=args.synthetic_classes,
        synthetic_per_class=args.synthetic_per_class,
        synthetic_size=predictor.size,
    )
    if isinstance(source, ImageFolderSource):
        source = align_folder_labels(source, predictor.class_names)
    validate(source, len(predictor.class_names))
    metrics = predictor.evaluate(decode_source(source, predictor.size, cache_dir=None))
    print(f"{len(source)} images from {args.data}")
    print(f"MAP@1  {metrics['map@1']:.4f}\nMAP@5  {metrics['map@5']:.4f}\nacc@5  {metrics['acc@5']:.4f}")
    print(f"loss   {metrics['loss']:.4f}")


def _cmd_predict(args: argparse.Namespace) -> None:
    from knifejax.inference import image_files

    predictor = _predictor(args)
    files = image_files(args.images)
    top, probs = predictor.top_k(predictor.load_images(files), args.top)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path"] + [f"{kind}_{r}" for r in range(1, top.shape[1] + 1) for kind in ("class", "score")])
        for path, indices, scores in zip(files, top, probs):
            cells = [c for i, s in zip(indices, scores) for c in (predictor.class_names[i], f"{s:.6f}")]
            writer.writerow([str(path)] + cells)
    print(f"wrote the top-{top.shape[1]} classes of {len(files)} images to {out}")


def _add_trained_model_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("the trained model: --run DIR, or --model NAME --weights FILE")
    group.add_argument("--run", help="run directory written by `train`")
    group.add_argument("--which", choices=("best", "latest"), default="best", help="checkpoint of the run (default: best)")
    group.add_argument("--model", help="architecture name, for a checkpoint made elsewhere")
    group.add_argument("--weights", help="checkpoint FILE with timm key names (.safetensors/.pth/.npz)")
    group.add_argument("--classes-file", help="text file naming class i on line i")
    group.add_argument("--image-size", type=int, help="input size for --model (default: its pretrained size)")
    group.add_argument("--norm", choices=("model", "imagenet"), default="model", help="normalisation for --model")
    group.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: 32)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m knifejax",
        description="Fine-grained image classification with timm-equal JAX models.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{train,evaluate,predict}")

    train = commands.add_parser(
        "train",
        help="train a model into a run directory (run it again to resume)",
        description="Train a model. Everything lands in --run DIR; the same command again resumes from the last "
        "checkpoint. Without --data it trains on the embedded synthetic knives.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("--run", required=True, help="run directory (created, or resumed when it exists)")
    train.add_argument("--preset", choices=("study",), help="start from the study's recipe; flags override it")
    train.add_argument("--distributed", action="store_true", help="call jax.distributed.initialize() (several hosts)")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_config_flags(train)
    train.set_defaults(func=_cmd_train)

    evaluate = commands.add_parser("evaluate", help="MAP@1, MAP@5 and acc@5 on labelled data")
    _add_trained_model_flags(evaluate)
    evaluate.add_argument("--data", required=True, help=SPEC_HELP)
    evaluate.add_argument("--root", help="folder the CSV paths are relative to")
    evaluate.add_argument("--synthetic-classes", type=int, default=192)
    evaluate.add_argument("--synthetic-per-class", type=int, default=40, help="(test split: a quarter of it)")
    evaluate.set_defaults(func=_cmd_evaluate)

    predict = commands.add_parser("predict", help="top-5 classes per image, to a CSV")
    _add_trained_model_flags(predict)
    predict.add_argument("images", nargs="+", help="image files or folders")
    predict.add_argument("--out", default="predictions.csv", help="CSV to write (default: predictions.csv)")
    predict.add_argument("--top", type=int, default=5, help="classes per image (default: 5)")
    predict.set_defaults(func=_cmd_predict)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    sys.exit(main())
