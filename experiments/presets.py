"""The three scales an experiment runs at: `smoke` (seconds), `quick` (minutes, CPU), `study` (the study's).

A preset is the base TrainConfig every setting of an experiment starts from, plus the batch sizes a batch
sweep tries. Settings then override a few fields (the learning rate, the schedule, ...).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from knifejax import study
from knifejax.train.config import TrainConfig
from knifejax.train.flags import flag


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str  # one line for --help
    fields: dict  # TrainConfig fields every run starts from
    batch_sizes: tuple[int, ...]  # what a batch-size sweep tries; fields["batch_size"] is one of them
    study_recipe: bool = False  # start from TrainConfig.study() rather than TrainConfig()
    notes: tuple[str, ...] = field(default=())  # what this scale changes from the study, for the table

    def config(self, **overrides) -> TrainConfig:
        values = {**self.fields, **overrides}
        return TrainConfig.study(**values) if self.study_recipe else TrainConfig(**values)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


PRESETS = {
    "smoke": Preset(
        name="smoke",
        summary="seconds: 4 synthetic classes at 32 px, 2 short epochs of ResNet-18 from scratch (checks the pipeline)",
        fields=dict(
            model="resnet18", pretrained=None, data="synthetic", val_data="synthetic", test_data="synthetic",
            synthetic_classes=4, synthetic_per_class=8, image_size=32, epochs=2, batch_size=8,
            optimizer="adam", lr=1e-3, schedule="cosine",
        ),  # fmt: skip
        batch_sizes=(4, 8, 16),
        notes=("smoke scale: the numbers mean nothing; it only shows every step of the experiment runs.",),
    ),
    "quick": Preset(
        name="quick",
        summary="minutes on a 2-core CPU: 16 synthetic knife classes at 64 px, EfficientNet-Lite0 from its "
        "ImageNet weights, 5 epochs",
        fields=dict(
            model="tf_efficientnet_lite0", pretrained="default", data="synthetic", val_data="synthetic",
            test_data="synthetic", synthetic_classes=16, synthetic_per_class=24, image_size=64, epochs=5,
            batch_size=16, optimizer="adam", lr=1e-3, schedule="cosine",
        ),  # fmt: skip
        batch_sizes=study.BATCH_SIZES,
        notes=(
            "quick scale: EfficientNet-Lite0 (the only ImageNet weights available offline) instead of B0, "
            "the embedded synthetic knives instead of the study's photos, small images and few epochs so that "
            "a whole experiment runs in minutes on a 2-core CPU; batch 16 by default (the study's smallest) for "
            "more updates per epoch.",
            "base learning rate 1e-3 (the study's is 1e-4): in this preset's 120 steps Lite0 barely moves at 1e-4 "
            "(see the quick sweep_lr), so the experiments that keep the rate fixed compare at a rate where training "
            "gets somewhere.",
            "normalisation: Lite0's own (mean = std = 0.5, what its weights were trained with); the study used "
            "ImageNet mean/std with B0.",
        ),
    ),
    "study": Preset(
        name="study",
        summary=f"{study.summary()} (hours on a GPU)",
        fields={},
        batch_sizes=study.BATCH_SIZES,
        study_recipe=True,
        notes=(f"data roles as in the study: {study.DATA_ROLES}.", f"precision: {study.PRECISION_NOTE}."),
    ),
}


# Fields the paragraph states in its own words, so not repeated among the flags that changed the preset.
DESCRIBED = ("data", "val_data", "test_data", "root", "max_steps")


def describe(preset: Preset, cfg: TrainConfig, varied: frozenset[str] = frozenset(), given: dict | None = None) -> str:
    """One paragraph saying what data, size, model and recipe the runs of `preset` used (`cfg`: the experiment's
    base configuration; `varied`: the fields the experiment's settings change, said to vary by row; `given`: the
    fields the command line set, named as changes to the preset)."""
    if cfg.data == "synthetic":
        per_eval = max(2, cfg.synthetic_per_class // 4)
        data = (
            f"the embedded synthetic knives, {cfg.synthetic_classes} classes (the first {cfg.synthetic_classes} "
            f"of 192), {cfg.synthetic_per_class} training images per class"
        )
        if cfg.val_data == "synthetic":
            data += f", a separate validation set of {per_eval} per class"
        if cfg.test_data == "synthetic":
            data += f" and a test set of {per_eval} per class"
    else:
        data = f"`{cfg.data}`" + (f" (root `{cfg.root}`)" if cfg.root else "")
    if cfg.val_data is None:
        val = f"validation: a stratified {cfg.val_fraction:.0%} of the training data"
    elif cfg.val_data == "synthetic":
        val = "validation every epoch on the synthetic validation set"
    else:
        val = f"validation every epoch on `{cfg.val_data}`"
    test = "test: none" if cfg.test_data is None else "test once at the end (final model)"
    start = "from ImageNet weights" if cfg.pretrained else "from scratch"
    if cfg.pretrained not in (None, "default"):
        start += f" (`{cfg.pretrained}`)"
    model = "The architecture of each row" if "model" in varied else cfg.model
    if "pretrained" in varied:
        start = "starting as each row says"
    size = "the input size of each row" if "image_size" in varied else f"{cfg.image_size or 'model-size'} px"
    lr = "at the learning rate of each row" if "lr" in varied else f"lr {format_lr(cfg.lr)}"
    norm = "the model's" if cfg.norm == "model" else "ImageNet"
    changed = {k: v for k, v in (given or {}).items() if k not in DESCRIBED}
    length = f"{cfg.epochs} epochs"
    if cfg.max_steps is not None:
        length = (f"**every run cut to its first {cfg.max_steps} optimizer steps** (`--max-steps {cfg.max_steps}`; "
                  f"a rehearsal, its numbers are no result) of a {cfg.epochs}-epoch schedule")
    flags = ", ".join(f"`{_flag_text(k, v)}`" for k, v in changed.items())
    return (
        f"Preset **{preset.name}**: {data}; {val}; {test}. {model} {start}, {size}, {length}, "
        f"batch {cfg.batch_size}, {cfg.optimizer} {lr} with a per-step {cfg.schedule} schedule unless the setting "
        f"says otherwise, {'augmented' if cfg.augment else 'no augmentation'} (the study's transforms), {norm} "
        f"normalisation, {cfg.precision}."
        + (f" Changed from the preset on the command line: {flags}." if flags else "")
    )


def _flag_text(name: str, value) -> str:
    """A field's value as the flag that sets it: --epochs 3, --no-augment, --rotation 0 90."""
    if isinstance(value, bool):
        return flag(name) if value else flag(f"no_{name}")
    return f"{flag(name)} {' '.join(map(str, value)) if isinstance(value, tuple) else value}"


def format_lr(lr: float) -> str:
    """1e-2 -> '1e-2', 5e-4 -> '5e-4', 0.0003 -> '3e-4' (as the study writes rates)."""
    mantissa, exponent = f"{lr:e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"
