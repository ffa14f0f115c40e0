"""One training run's configuration, as code: a dataclass whose fields are also the command-line flags.

The defaults are knifejax's recipe; `TrainConfig.study()` gives the study's, as `knifejax.study` states it
(its model with the weights it used, Adam 1e-4, per-step cosine, batch 32, 224 px, 20 epochs, ImageNet
normalisation). Each field's `help` is what `python -m knifejax train --help` prints.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knifejax import study
from knifejax.data.decode import DEFAULT_MAX_PIXELS
from knifejax.data.device_augment import HOST_ONLY_JITTER
from knifejax.errors import ConfigError
from knifejax.train.optim import OPTIMIZERS, SCHEDULES
from knifejax.train.placement import PLACEMENTS


def _field(group: str):
    """A field maker for one flag group of `--help`."""

    def make(default: Any, help: str, **kwargs) -> Any:
        return field(default=default, metadata={"help": help, "group": group, **kwargs})

    return make


_model, _data, _recipe = _field("model"), _field("data"), _field("recipe")


def _not_finite_or(test):
    return lambda value: not math.isfinite(value) or test(value)


# (field, is it wrong?, what to say): checked by TrainConfig itself, so a library user meets the same message.
_CHECKS = [
    ("epochs", lambda v: v < 1, "--epochs must be at least 1"),
    ("max_steps", lambda v: v < 1, "--max-steps must be at least 1"),
    ("batch_size", lambda v: v < 2, "--batch-size must be at least 2 (BatchNorm needs two images to normalise a batch)"),
    ("lr", _not_finite_or(lambda v: v < 0), "--lr must be a finite number, 0 or more"),
    ("val_fraction", _not_finite_or(lambda v: not 0 <= v < 1), "--val-fraction must be in [0, 1)"),
    ("image_size", lambda v: v < 16, "--image-size must be at least 16 pixels"),
    ("num_classes", lambda v: v < 1, "--num-classes must be at least 1"),
    ("synthetic_classes", lambda v: not 1 <= v <= 192, "--synthetic-classes must be in 1..192"),
    ("synthetic_per_class", lambda v: v < 1, "--synthetic-per-class must be at least 1"),
    ("max_image_pixels", lambda v: v < 1, "--max-image-pixels must be at least 1"),
    ("workers", lambda v: v < 0, "--workers must be 0 or more"),
    ("freeze_stages", lambda v: v < 0, "--freeze-stages must be 0 or more"),
    ("drop_rate", _not_finite_or(lambda v: not 0 <= v < 1), "--drop-rate must be in [0, 1)"),
    ("drop_path_rate", _not_finite_or(lambda v: not 0 <= v < 1), "--drop-path-rate must be in [0, 1)"),
    ("t_max", lambda v: v < 1, "--t-max must be at least 1 step"),
    ("eta_min", _not_finite_or(lambda v: v < 0), "--eta-min must be 0 or more"),
    ("warmup_steps", lambda v: v < 0, "--warmup-steps must be 0 or more"),
    ("momentum", _not_finite_or(lambda v: not 0 <= v < 1), "--momentum must be in [0, 1)"),
    ("weight_decay", _not_finite_or(lambda v: v < 0), "--weight-decay must be 0 or more"),
    ("label_smoothing", _not_finite_or(lambda v: not 0 <= v < 1), "--label-smoothing must be in [0, 1)"),
    ("checkpoint_every", lambda v: v < 0, "--checkpoint-every must be 0 or more"),
    ("hflip", _not_finite_or(lambda v: not 0 <= v <= 1), "--hflip must be a probability in [0, 1]"),
    ("vflip", _not_finite_or(lambda v: not 0 <= v <= 1), "--vflip must be a probability in [0, 1]"),
    ("brightness", _not_finite_or(lambda v: v < 0), "--brightness must be 0 or more"),
    ("contrast", _not_finite_or(lambda v: v < 0), "--contrast must be 0 or more"),
    ("saturation", _not_finite_or(lambda v: v < 0), "--saturation must be 0 or more"),
    ("hue", _not_finite_or(lambda v: not 0 <= v <= 0.5), "--hue must be in [0, 0.5]"),
]


@dataclass(frozen=True)
class TrainConfig:
    model: str = _model("tf_efficientnet_lite0", "architecture name as timm spells it, optionally NAME.TAG")
    pretrained: str | None = _model(
        None,
        "start from ImageNet weights: 'default' (packaged or hub) or a checkpoint FILE; omit to train from scratch",
    )
    weights_dir: str | None = _model(
        None,
        "folder of pretrained weight files, each NAME.TAG.safetensors or NAME.TAG.pth (or a Hugging Face cache): "
        "'default' weights come from there (or the installed package), never from the hub",
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
    allow_duplicates: bool = _data(
        False, "allow the same image file in several rows, or in both training and validation/test data"
    )
    synthetic_classes: int = _data(192, "synthetic knives: number of classes")
    synthetic_per_class: int = _data(40, "synthetic knives: training images per class (validation/test: a quarter)")
    max_image_pixels: int = _data(
        DEFAULT_MAX_PIXELS, "refuse image files with more pixels than this (read from the header, before decoding)"
    )
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
    workers: int = _data(
        0, "worker processes decoding the images and, with the host placement, feeding training (0: threads)"
    )
    data_placement: str = _data(
        "auto",
        "where the decoded images live: 'device' (copied once to accelerator memory, augmented there), 'host' "
        "(grain workers augment each batch), 'auto' (device when the images fit in half its memory)",
        choices=PLACEMENTS,
    )
    cache_dir: str | None = _data(
        "default", "where decoded, resized images are cached ('default': ~/.cache/knifejax; 'none': in memory)"
    )
    epochs: int = _recipe(20, "training epochs")
    max_steps: int | None = _recipe(
        None,
        "stop after N optimizer steps, the last epoch cut short but still evaluated, checkpointed and tested: a "
        "rehearsal at full size; the learning-rate schedule still spans --epochs",
    )
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
        """The study's setting (`knifejax.study.RECIPE`: its model and weights, recipe, size and normalisation);
        `overrides` change fields of it."""
        return cls(**{**study.RECIPE, **overrides})

    def __post_init__(self) -> None:
        """Every value that cannot work is refused here, before any data is read or anything compiled."""
        problems = [
            f"{message}, not {value!r}"
            for name, bad, message in _CHECKS
            if (value := getattr(self, name)) is not None and bad(value)
        ]
        host_only = [name for name in HOST_ONLY_JITTER if getattr(self, name) > 0]
        if self.data_placement == "device" and self.augment and host_only:
            problems.append(
                f"--data-placement device does not implement {', '.join(host_only)} jitter; use --data-placement "
                "host (or auto)"
            )
        if self.rotation[0] > self.rotation[1]:
            problems.append(f"--rotation MIN MAX must not have MIN above MAX, not {self.rotation[0]:g} {self.rotation[1]:g}")
        if problems:
            raise ConfigError("; ".join(problems))

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
