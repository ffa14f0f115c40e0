"""One training run's configuration, as code: a dataclass whose fields are also the command-line flags.

The defaults are knifejax's recipe; `TrainConfig.study()` gives the study's (Adam 1e-4, per-step
cosine, batch 32, 224 px, 20 epochs, ImageNet normalisation, every parameter decayed — with weight decay 0,
as the study had, that last choice changes nothing until a decay is set). Each field's `help` is what
`python -m knifejax train --help` prints.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knifejax.train.optim import OPTIMIZERS, SCHEDULES


def _field(group: str):
    """A field maker for one flag group of `--help`."""

    def make(default: Any, help: str, **kwargs) -> Any:
        return field(default=default, metadata={"help": help, "group": group, **kwargs})

    return make


_model, _data, _recipe = _field("model"), _field("data"), _field("recipe")


@dataclass(frozen=True)
class TrainConfig:
    model: str = _model("tf_efficientnet_lite0", "architecture name as timm spells it, optionally NAME.TAG")
    pretrained: str | None = _model(
        None,
        "start from ImageNet weights: 'default' (packaged or hub) or a checkpoint FILE; omit to train from scratch",
    )
    weights: str | None = _model(None, "initial weights FILE with timm key names (e.g. a checkpoint made elsewhere)")
    num_classes: int | None = _model(None, "classes of the classifier; default: the training data's")
    drop_rate: float = _model(0.0, "dropout before the classifier")
    drop_path_rate: float = _model(0.0, "stochastic depth rate")
    freeze_stages: int = _model(0, "fine-tune with the first N feature stages frozen (0: every layer trains)")
    frozen_bn_eval: bool = _model(True, "keep frozen stages' BatchNorm in eval mode (running statistics fixed)")
    data: str = _data("synthetic", "training data: a CSV (Id,Label), an image folder, tfds:NAME[:SPLIT], or synthetic")
    val_data: str | None = _data(
        None, "validation data evaluated every epoch (the study used its test.csv); default: a split of --data"
    )
    test_data: str | None = _data(None, "test data, evaluated once at the end with the final model")
    root: str | None = _data(None, "folder the CSV paths are relative to (default: the CSV's folder)")
    classes_file: str | None = _data(None, "text file naming class i on line i (CSV data)")
    val_fraction: float = _data(0.1, "fraction of each class carved from --data for validation when no --val-data")
    skip_bad: bool = _data(False, "skip unreadable files and bad labels (counted in the log) instead of stopping")
    synthetic_classes: int = _data(192, "synthetic knives: number of classes")
    synthetic_per_class: int = _data(40, "synthetic knives: training images per class (validation/test: a quarter)")
    image_size: int | None = _data(None, "square training size in pixels (default: the model's pretrained input size)")
    norm: str = _data("model", "input normalisation: 'model' (the model's pretrained_cfg) or 'imagenet' (the study's)",
                   choices=("model", "imagenet"))
    augment: bool = _data(True, "apply the study's train augmentations")
    brightness: float = _data(0.2, "ColorJitter brightness")
    contrast: float = _data(0.0, "ColorJitter contrast")
    saturation: float = _data(0.0, "ColorJitter saturation")
    hue: float = _data(0.0, "ColorJitter hue")
    rotation: tuple[float, float] = _data((0.0, 180.0), "RandomRotation range in degrees (the study's is one-sided)")
    hflip: float = _data(0.5, "horizontal flip probability")
    vflip: float = _data(0.5, "vertical flip probability")
    workers: int = _data(0, "data-loader worker processes (0: threads in the training process)")
    cache_dir: str | None = _data("default", "where decoded, resized images are cached ('default': ~/.cache/knifejax)")
    epochs: int = _recipe(20, "training epochs")
    batch_size: int = _recipe(32, "global batch size (split over devices)")
    optimizer: str = _recipe("adam", "optimizer", choices=OPTIMIZERS)
    lr: float = _recipe(1e-4, "base learning rate")
    schedule: str = _recipe("cosine", "learning-rate schedule, stepped every iteration", choices=SCHEDULES)
    t_max: int | None = _recipe(None, "cosine period T_max in steps (default: the whole run)")
    eta_min: float = _recipe(0.0, "cosine minimum learning rate")
    warmup_steps: int = _recipe(0, "linear warmup steps")
    momentum: float = _recipe(0.0, "SGD/RMSprop momentum")
    nesterov: bool = _recipe(False, "Nesterov momentum (SGD)")
    weight_decay: float = _recipe(0.0, "weight decay (coupled L2 for adam/sgd/rmsprop, decoupled for adamw)")
    decay_all: bool = _recipe(False, "decay every parameter as the study did; default excludes BatchNorm and biases (timm)")
    label_smoothing: float = _recipe(0.0, "label smoothing of the cross-entropy")
    precision: str = _recipe("fp32", "compute precision; bf16 keeps float32 master weights", choices=("fp32", "bf16"))
    seed: int = _recipe(0, "seed of initialisation, data order, augmentation and the validation split")
    checkpoint_every: int = _recipe(0, "also checkpoint every N steps within an epoch (0: at each epoch's end only)")

    @classmethod
    def study(cls, **overrides) -> TrainConfig:
        """The study's recipe: Adam 1e-4, cosine per step, batch 32, 224 px, 20 epochs, ImageNet mean/std."""
        base = dict(optimizer="adam", lr=1e-4, schedule="cosine", batch_size=32, epochs=20, image_size=224,
                    norm="imagenet", decay_all=True, pretrained="default")
        return cls(**{**base, **overrides})

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, values: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown configuration keys {unknown}; known: {sorted(known)}")
        values = dict(values)
        if values.get("rotation") is not None:
            values["rotation"] = tuple(values["rotation"])
        return cls(**values)

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        return cls.from_json(json.loads(Path(path).read_text()))

    def differences(self, other: TrainConfig, ignore: tuple[str, ...] = ()) -> list[str]:
        """`name: self -> other` for each field that differs, except `ignore`."""
        return [
            f"{f.name}: {getattr(self, f.name)!r} -> {getattr(other, f.name)!r}"
            for f in dataclasses.fields(self)
            if f.name not in ignore and getattr(self, f.name) != getattr(other, f.name)
        ]
