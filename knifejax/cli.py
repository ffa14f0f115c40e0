"""`python -m knifejax train | evaluate | predict | gradcam | ensemble`.

train     trains a model into a run directory (the same command again resumes it)
evaluate  prints MAP@1, MAP@5 and top-5 accuracy of a trained model on labelled data
predict   writes the top-5 classes and probabilities of each image to a CSV
gradcam   draws Grad-CAM maps of a trained model's predictions over the images, one PNG each and a grid
ensemble  combines trained runs (score averaging or a stacked head) and prints members' and ensemble's MAP
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

from knifejax import study
from knifejax.atomic_write import write_text_atomically
from knifejax.data.decode import DEFAULT_MAX_PIXELS
from knifejax.data.open import SPEC_HELP
from knifejax.errors import CommandParser, ConfigError, reported_errors
from knifejax.output_paths import check_writable_folder

EXAMPLES = """examples:
  python -m knifejax train --run runs/lite0 --pretrained default --epochs 3 --image-size 96 --synthetic-classes 32
  python -m knifejax train --run runs/b0 --preset study --data train.csv --val-data test.csv --root knives/ \\
      --weights-dir weights/   # tf_efficientnet_b0.aa_in1k from weights/; test.csv validates, as in the study
  python -m knifejax evaluate --run runs/lite0 --data synthetic --synthetic-classes 32
  python -m knifejax predict --run runs/lite0 photos/ --out predictions.csv
  python -m knifejax evaluate --model resnet18 --weights model.safetensors --data test.csv --root knives/
  python -m knifejax gradcam --run runs/lite0 photos/ --out gradcam/
  python -m knifejax gradcam --run runs/b0 --data test.csv --root knives/ --select failed --limit 16
  python -m knifejax ensemble --run runs/lite0 --run runs/r18 --method stacked --out ensembles/two --data synthetic
"""

ENSEMBLE_EXAMPLES = """examples:
  # the mean of two runs' probabilities, on the synthetic test images
  python -m knifejax ensemble --run runs/lite0 --run runs/r18 --data synthetic
  # a stacked head over both runs' penultimate features, fit on their validation images, saved
  python -m knifejax ensemble --run runs/lite0 --run runs/r18 --method stacked --out ensembles/two \\
      --data test.csv --root knives/
  # the same ensemble again, on other images
  python -m knifejax ensemble --load ensembles/two --data more_test.csv --root knives/
"""


def _config_from_args(args: argparse.Namespace):
    from knifejax.train.config import TrainConfig
    from knifejax.train.flags import given_fields
    from knifejax.train.run import RunDir

    given = given_fields(args)
    saved = RunDir(args.run).config
    if saved.exists() and args.preset is None:
        # resuming: the saved config is the base, flags given again must agree with it (checked by RunDir)
        return RunDir(args.run).read_config().replace(**given)
    if args.preset == "study":
        return TrainConfig.study(**given)
    return TrainConfig(**given)


def _cmd_train(args: argparse.Namespace) -> None:
    check_writable_folder(Path(args.run), "--run")
    import jax

    if args.distributed:
        jax.distributed.initialize()
    from knifejax.models.weights_folder import weights_file
    from knifejax.train.loop import fit

    cfg = _config_from_args(args)
    if cfg.pretrained == "default" and cfg.weights_dir is not None:
        weights_file(cfg.model, cfg.weights_dir)  # a missing file is said before the data is read
    fit(cfg, args.run, progress=not args.no_progress)


def _predictor(args: argparse.Namespace):
    from knifejax.inference import Predictor

    if (args.run is None) == (args.model is None):
        raise ConfigError("give either --run DIR, or --model NAME with --weights FILE")
    if args.run is not None:
        return Predictor.from_run(args.run, args.which, args.batch_size)
    if args.weights is None:
        raise ConfigError("--model needs --weights FILE (a checkpoint with timm key names)")
    names = Path(args.classes_file).read_text().splitlines() if args.classes_file else None
    return Predictor.from_weights(args.model, args.weights, names, args.image_size, args.norm, args.batch_size)


def _cmd_evaluate(args: argparse.Namespace) -> None:
    predictor = _predictor(args)
    source, data = _open_labelled(args, predictor)
    metrics = predictor.evaluate(data)
    print(f"{len(source)} images from {args.data}")
    print(f"MAP@1  {metrics['map@1']:.4f}\nMAP@5  {metrics['map@5']:.4f}\nacc@5  {metrics['acc@5']:.4f}")
    print(f"loss   {metrics['loss']:.4f}")


def _check_output_file(path: str, flag: str, overwrite: bool) -> None:
    """Refuse an output file that cannot be written before any work is done for it."""
    out = Path(path)
    if out.is_dir():
        raise ConfigError(f"{flag} {out} is a folder; give the path of a file to write")
    if out.exists() and not overwrite:
        raise ConfigError(f"{flag} {out} exists; give another path, or pass --overwrite to replace it")
    check_writable_folder(out.parent, flag)


def _check_output_folder(path: str, flag: str) -> None:
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{flag} {out} is a file; give a folder to write the images into")
    check_writable_folder(out, flag)


def _cmd_predict(args: argparse.Namespace) -> None:
    from knifejax.inference import image_files

    _check_output_file(args.out, "--out", args.overwrite)
    predictor = _predictor(args)
    files = image_files(args.images)
    top, probs = predictor.top_k(predictor.load_images(files, args.max_image_pixels), args.top)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["path"] + [f"{kind}_{r}" for r in range(1, top.shape[1] + 1) for kind in ("class", "score")])
    for path, indices, scores in zip(files, top, probs):
        cells = [c for i, s in zip(indices, scores) for c in (predictor.class_names[i], f"{s:.6f}")]
        writer.writerow([str(path)] + cells)
    write_text_atomically(out, text.getvalue())
    print(f"wrote the top-{top.shape[1]} classes of {len(files)} images to {out}")


def _open_labelled(args: argparse.Namespace, predictor):
    """The labelled data of `--data`, decoded at the model's size, its folders matched to the model's classes."""
    from knifejax.data.cache import decode_source
    from knifejax.data.open import open_source
    from knifejax.data.sources import ImageFolderSource
    from knifejax.data.validate import refuse_duplicates, validate
    from knifejax.inference import align_folder_labels

    source = open_source(
        args.data,
        split="test",
        root=args.root,
        classes_file=args.classes_file,
        synthetic_classes=args.synthetic_classes,
        synthetic_per_class=args.synthetic_per_class,
        synthetic_size=predictor.size,
        max_pixels=args.max_image_pixels,
    )
    if isinstance(source, ImageFolderSource):
        source = align_folder_labels(source, predictor.class_names)
    if not args.allow_duplicates:
        refuse_duplicates({"the": source})
    validate(source, len(predictor.class_names))
    return source, decode_source(source, predictor.size, cache_dir=None)


def _cmd_gradcam(args: argparse.Namespace) -> None:
    import numpy as np

    from knifejax.explain.batch import explain_images, write_explanations
    from knifejax.inference import image_files

    if bool(args.images) == bool(args.data):
        raise ConfigError("give image files or folders, or labelled data with --data (then --select can pick "
                          "correct or failed predictions)")
    if args.images and args.select != "all":
        raise ConfigError(f"--select {args.select} needs labelled images: give them with --data instead of as files")
    _check_output_folder(args.out, "--out")
    predictor = _predictor(args)
    if args.images:
        files = image_files(args.images)
        data = predictor.load_images(files, args.max_image_pixels)
        names = [f"{i:04d}_{path.stem}" for i, path in enumerate(files)]
        labels = None
    else:
        _, data = _open_labelled(args, predictor)
        names, labels = None, data.labels
    explained = explain_images(
        predictor.model, np.asarray(data.images), predictor.mean, predictor.std, labels,
        layer=args.layer, batch_size=args.batch_size,
    )
    layer = args.layer or predictor.model.grad_cam_layer
    written = write_explanations(
        explained, predictor.class_names, args.out, names=names, which=args.select, limit=args.limit,
        title=f"Grad-CAM at {layer}, {args.select} predictions",
    )
    print(f"wrote {len(written) - 1} overlays and {written[-1]} ({args.select} predictions, layer {layer})")


def _ensemble_data(args: argparse.Namespace):
    from knifejax.ensemble import DataSpec

    if args.data is None:
        return "test"  # the members' --test-data; an error says to give --data when they have none
    return DataSpec(args.data, args.root, args.classes_file, args.synthetic_classes, args.synthetic_per_class)


def _stacker_config(args: argparse.Namespace):
    from knifejax.ensemble import StackerConfig

    names = ("hidden", "depth", "dropout", "weight_decay", "epochs", "lr", "seed")
    given = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if args.stacker_batch_size is not None:
        given["batch_size"] = args.stacker_batch_size
    return StackerConfig(**given)


def _cmd_ensemble(args: argparse.Namespace) -> None:
    from knifejax.ensemble import build_ensemble, load_ensemble

    if (args.run is None) == (args.load is None):
        raise ConfigError("give the members with --run DIR (once per run), or a saved ensemble with --load DIR")
    if args.load is not None:
        ensemble = load_ensemble(args.load, batch_size=args.batch_size)
    else:
        stacked = args.method == "stacked"
        ensemble = build_ensemble(
            args.run,
            args.method,
            weights=args.weights,
            which=args.which,
            stacker=_stacker_config(args) if stacked else None,
            fit_on=args.fit_on,
            out=args.out,
            batch_size=args.batch_size,
        )
    report = ensemble.report(_ensemble_data(args))
    if ensemble.method == "stacked" and args.data is not None:
        fit_on = ensemble.fit_info.get("fit_on")
        if fit_on == "val" and any(m.config.val_data == args.data for m in ensemble.members):
            print(f"warning: the stacked head was fit on the members' --val-data, which is {args.data}, the "
                  "data evaluated here: this score is optimistic; evaluate on images neither members nor head saw")
    rows = [(f"{m['run']} ({m['model']}, {m['size']}px)", m) for m in report["members"]]
    method = report["ensemble"]["method"]
    weights = "" if ensemble.weights is None else ", weights " + " ".join(f"{w:.3g}" for w in ensemble.weights)
    rows.append((f"ensemble: {method}{weights}", report["ensemble"]))
    width = max(len(name) for name, _ in rows)
    print(f"{len(ensemble.members)} members on {report['data']}")
    print(f"{'':<{width}}   MAP@1   MAP@5   acc@5")
    for name, m in rows:
        print(f"{name:<{width}}  {m['map@1']:.4f}  {m['map@5']:.4f}  {m['acc@5']:.4f}")
    if args.out is not None and args.load is None:
        print(f"saved the ensemble to {args.out} (python -m knifejax ensemble --load {args.out} ... uses it again)")


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
    group.add_argument("--max-image-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
                       help=f"refuse image files with more pixels than this (default: {DEFAULT_MAX_PIXELS})")


def _add_allow_duplicates_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--allow-duplicates", action="store_true",
                        help="keep rows that repeat an image (default: refuse them, since a repeated row weighs its "
                        "image double in the scores)")


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="python -m knifejax",
        description="Fine-grained image classification with timm-equal JAX models.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="{train,evaluate,predict,gradcam,ensemble}"
    )

    train = commands.add_parser(
        "train",
        help="train a model into a run directory (run it again to resume)",
        description="Train a model. Everything lands in --run DIR; the same command again resumes from the last "
        "checkpoint. Without --data it trains on the embedded synthetic knives.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("--run", required=True, help="run directory (created, or resumed when it exists)")
    train.add_argument("--preset", choices=("study",), help="start from the study's setting (knifejax.study: "
                       f"{study.summary()}); flags override it")
    train.add_argument("--distributed", action="store_true", help="call jax.distributed.initialize() (several hosts)")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    from knifejax.train.flags import add_config_flags

    add_config_flags(train)
    train.set_defaults(func=_cmd_train)

    evaluate = commands.add_parser("evaluate", help="MAP@1, MAP@5 and acc@5 on labelled data")
    _add_trained_model_flags(evaluate)
    evaluate.add_argument("--data", required=True, help=SPEC_HELP)
    evaluate.add_argument("--root", help="folder the CSV paths are relative to")
    _add_allow_duplicates_flag(evaluate)
    evaluate.add_argument("--synthetic-classes", type=int, default=192)
    evaluate.add_argument("--synthetic-per-class", type=int, default=40, help="(test split: a quarter of it)")
    evaluate.set_defaults(func=_cmd_evaluate)

    predict = commands.add_parser("predict", help="top-5 classes per image, to a CSV")
    _add_trained_model_flags(predict)
    predict.add_argument("images", nargs="+", help="image files or folders")
    predict.add_argument("--out", default="predictions.csv", help="CSV to write (default: predictions.csv)")
    predict.add_argument("--top", type=int, default=5, help="classes per image (default: 5)")
    predict.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    predict.set_defaults(func=_cmd_predict)

    gradcam = commands.add_parser(
        "gradcam",
        help="Grad-CAM overlays of a model's predictions: one PNG per image and a grid",
        description="Draw what a trained model looks at: the Grad-CAM map of its predicted class over each image "
        "(pytorch-grad-cam's GradCAM, computed with jax.grad), one PNG per image and grid.png with the true and "
        "predicted classes. Give image files or folders, or labelled data with --data to pick correct or "
        "failed predictions (the most confident first).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_trained_model_flags(gradcam)
    gradcam.add_argument("images", nargs="*", help="image files or folders (or use --data)")
    gradcam.add_argument("--data", help=f"labelled data instead of images: {SPEC_HELP}")
    gradcam.add_argument("--root", help="folder the CSV paths are relative to")
    _add_allow_duplicates_flag(gradcam)
    gradcam.add_argument("--synthetic-classes", type=int, default=192)
    gradcam.add_argument("--synthetic-per-class", type=int, default=40, help="(test split: a quarter of it)")
    gradcam.add_argument("--select", choices=("all", "correct", "failed"), default="all",
                         help="which predictions to draw; correct/failed need --data (default: all)")
    gradcam.add_argument("--limit", type=int, help="draw at most this many images (default: all selected)")
    gradcam.add_argument("--layer", help="timm module path of the layer (default: the model's, e.g. layer4, bn2, "
                         "blocks, blocks.11.norm1; see docs/explain.md)")
    gradcam.add_argument("--out", default="gradcam", help="folder for the PNGs (default: gradcam)")
    gradcam.set_defaults(func=_cmd_gradcam)

    _add_ensemble_parser(commands)
    for command in commands.choices.values():
        command.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    return parser


def _add_ensemble_parser(commands) -> None:
    ensemble = commands.add_parser(
        "ensemble",
        help="combine trained runs (score averaging or a stacked head) and evaluate them",
        description="Combine trained runs and print each member's MAP@1/MAP@5/acc@5, then the ensemble's. "
        "'average' takes the mean of the members' probabilities (the study's score averaging), 'geometric' the "
        "mean of their log-probabilities; 'stacked' fits a small network on the members' penultimate features "
        "of images none of them trained on (their validation split; --fit-on train is the study's choice). "
        "Members may differ in model, image size and normalisation: each scores images its own way. With "
        "--out the ensemble is saved and the members' features are cached there, so running the command again "
        "does not recompute them.",
        epilog=ENSEMBLE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    members = ensemble.add_argument_group("members")
    members.add_argument("--run", action="append", metavar="DIR", help="a run directory written by `train`; repeat "
                         "--run for each member (their class names must agree)")  # fmt: skip
    members.add_argument("--which", choices=("best", "latest"), default="best",
                         help="checkpoint of every run (default: best)")  # fmt: skip
    members.add_argument("--method", choices=("average", "geometric", "stacked"), default="average",
                         help="how to combine the members (default: average)")  # fmt: skip
    members.add_argument("--weights", type=float, nargs="+", metavar="W",
                         help="one weight per --run for average/geometric (default: equal)")  # fmt: skip
    members.add_argument("--out", metavar="DIR", help="save the ensemble here (ensemble.json, the stacked head, the "
                         "feature cache); default: nothing is written")  # fmt: skip
    members.add_argument("--load", metavar="DIR", help="evaluate an ensemble saved with --out instead of building one")
    members.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: 32)")

    from knifejax.ensemble.stacking import StackerConfig

    default = StackerConfig()
    head = ensemble.add_argument_group("the stacked head (--method stacked)")
    head.add_argument("--fit-on", choices=("val", "train"), default="val",
                      help="fit it on the members' validation images, held out from all of them (default), or on "
                      "their training images as the study did")  # fmt: skip
    head.add_argument("--depth", type=int, help=f"hidden layers; 0 is logistic regression (default: {default.depth})")
    head.add_argument("--hidden", type=int, help=f"width of each hidden layer (default: {default.hidden})")
    head.add_argument("--dropout", type=float, help=f"dropout before every layer (default: {default.dropout})")
    head.add_argument("--weight-decay", type=float, help=f"AdamW decay of kernels (default: {default.weight_decay})")
    head.add_argument("--epochs", type=int, help=f"passes over the fitting images (default: {default.epochs})")
    head.add_argument("--lr", type=float, help=f"AdamW learning rate (default: {default.lr})")
    head.add_argument("--stacker-batch-size", type=int, help="minibatch size (default: all images at once)")
    head.add_argument("--seed", type=int, help=f"seed of init, dropout and batch order (default: {default.seed})")

    data = ensemble.add_argument_group("evaluation data (default: the members' --test-data)")
    data.add_argument("--data", help=SPEC_HELP)
    data.add_argument("--root", help="folder the CSV paths are relative to")
    data.add_argument("--classes-file", help="text file naming class i on line i")
    data.add_argument("--synthetic-classes", type=int, help="synthetic knives: classes (default: the members')")
    data.add_argument("--synthetic-per-class", type=int,
                      help="synthetic knives: training images per class; the test split gets a quarter (default: the "
                      "members')")  # fmt: skip
    ensemble.set_defaults(func=_cmd_ensemble)


def _resume_hint(args: argparse.Namespace) -> str:
    """What Ctrl-C leaves: the newest complete checkpoint of the run, if the command trains one."""
    if args.command != "train":
        return ""
    from knifejax.train.run import RunDir

    steps = RunDir(args.run).kept_steps()
    if not steps:
        return "no checkpoint was saved yet; the same command starts the run again"
    return f"the last checkpoint is step {steps[-1]}; the same command resumes from it"


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    with reported_errors(debug=args.debug, on_interrupt=lambda: _resume_hint(args)):
        args.func(args)


if __name__ == "__main__":
    sys.exit(main())
