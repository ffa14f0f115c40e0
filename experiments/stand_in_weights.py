"""Stand-in weight files for a weights folder: every model the study preset loads, written in timm's format from a
seeded model, under the name its real file has (`NAME.TAG.safetensors`).

    python -m experiments.stand_in_weights weights/                 # every model of every experiment's study preset
    python -m experiments.stand_in_weights weights/ resnet18.tv_in1k

With them the study preset runs offline through the real loading path (`--weights-dir weights/`: the file found by
its name, its keys and shapes checked, the classifier replaced for the 192 classes), which is what a rehearsal at
the study's size needs. The numbers such a run reaches mean nothing: the weights are random, not ImageNet's. Each
file is the model as `knifejax.create_model(NAME.TAG, seed=1)` builds it with its tag's class count (1000 for
ImageNet tags, none for DINO's headless one), and a file already present is left as it is. Seed 1, not 0: a run
from scratch initialises with its own seed, 0 by default, and stand-ins equal to that would make the from-scratch
and transfer rows of `transfer_modes` one run.
"""

from __future__ import annotations

import argparse
import importlib
import os
from pathlib import Path

from knifejax.errors import CommandParser, ConfigError, reported_errors
from knifejax.models.registry import create_model
from knifejax.models.weights_folder import full_name
from knifejax.output_paths import check_writable_folder
from knifejax.train.flags import given_fields
from knifejax.weights import save_timm_weights

SEED = 1


def study_models(experiments: tuple[str, ...], flags: list[str] = ()) -> list[str]:
    """The `NAME.TAG` of every model whose pretrained weights the study preset of `experiments` loads, with the
    experiments' command-line `flags` (refused as the experiment refuses them)."""
    from experiments import runner
    from experiments.presets import PRESETS

    models: list[str] = []
    for name in experiments:
        experiment = importlib.import_module(f"experiments.{name}").EXPERIMENT
        args = runner.parser(experiment).parse_args(["--preset", "study", *flags])
        runner.check_flags(experiment, PRESETS["study"], given_fields(args))
        models += runner.pretrained_needs(runner.plan(experiment, PRESETS["study"], args, Path(".")))[0]
    return list(dict.fromkeys(models))


def write_stand_in_weights(folder: str | os.PathLike, models: list[str], *, say=print) -> list[Path]:
    """Write the missing stand-in file of each model into `folder`; returns every model's file."""
    folder = Path(folder)
    for model in models:
        try:
            full_name(model)
        except ValueError as error:
            raise ConfigError(f"{model}: {error}") from None
    check_writable_folder(folder, "WEIGHTS_DIR")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for model in models:
        path = folder / f"{full_name(model)}.safetensors"
        if not path.exists():  # written atomically: a file present is whole
            say(f"writing {path} (seeded stand-in)")
            save_timm_weights(create_model(full_name(model), seed=SEED), path)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> list[Path]:
    from experiments.report import ORDER

    p = CommandParser(prog="python -m experiments.stand_in_weights", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("folder", type=Path, metavar="WEIGHTS_DIR", help="the weights folder to write into")
    p.add_argument("models", nargs="*", metavar="NAME.TAG",
                   help="the models (default: every model the experiments' study preset loads)")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    args = p.parse_args(argv)
    with reported_errors(debug=args.debug):
        paths = write_stand_in_weights(args.folder, args.models or study_models(ORDER))
        print(f"{len(paths)} weight files in {args.folder}: " + ", ".join(p.name for p in paths))
        return paths


if __name__ == "__main__":
    main()
