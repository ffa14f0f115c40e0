"""Run directories for tests that need a trained-looking run without paying for training."""

import warnings

from flax import nnx

from knifejax.data import SyntheticKnives
from knifejax.train.checkpoint import Checkpoints
from knifejax.train.config import TrainConfig
from knifejax.train.run import RunDir, build_model


def write_untrained_run(path, model_name, size, norm, seed, pretrained, classes, per_class=16):
    """A run directory on `classes` synthetic classes whose best checkpoint is the model as initialised."""
    cfg = TrainConfig(
        model=model_name, pretrained="default" if pretrained else None, image_size=size, norm=norm, seed=seed,
        synthetic_classes=classes, synthetic_per_class=per_class, val_fraction=0.5,
        cache_dir=str(path.parent / "cache"),
    )  # fmt: skip
    run = RunDir(path)
    run.start(cfg)
    run.write_classes(SyntheticKnives(classes).class_names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an ImageNet head is dropped for fewer classes
        model = build_model(cfg, classes)
    _, params, rest = nnx.split(model, nnx.Param, ...)
    checkpoints = Checkpoints(run.best)
    checkpoints.save(1, {"model": (params, rest)}, {"epoch": 1})
    checkpoints.close()
    return path
