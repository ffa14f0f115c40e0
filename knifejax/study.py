"""The study knifejax reproduces, as it ran: its architectures with the weights it really loaded, its recipe and
the roles of its data files. `TrainConfig.study()`, `python -m knifejax train --preset study` and every
experiment's `study` preset read their setting from here, and from nowhere else.

The weights. The study's code pinned timm 0.6.12, where a bare architecture name meant one weight set. timm 1.0
names weight sets with tags, and its bare names resolve to other weights (`tf_efficientnet_b0` to the Noisy
Student `ns_jft_in1k`, `resnet18` to `a1_in1k`), so the study's setting names the tags of the weights 0.6.12
loaded.

The recipe, from the study's code: Adam at 1e-4 without weight decay (every parameter in one group, as torch's
`Adam(model.parameters())`), torch's `CosineAnnealingLR` stepped every iteration over the whole run, batch 32,
20 epochs, every image resized to 224 × 224 (aspect ignored) and normalised with ImageNet's mean and std for
every model (its data code hard-codes them), cross-entropy, and the augmentations of `TrainConfig`'s defaults
(brightness jitter 0.2, a rotation drawn from 0-180°, vertical and horizontal flips at 0.5).

Precision. The study trained with torch's fp16 autocast on a V100. knifejax's reduced precision is bf16, which a
V100 (compute capability 7.0) cannot compute natively. The study setting therefore trains in fp32, the same run
on every device; on a GPU with bf16 units (Ampere or newer)
`--precision bf16` is the counterpart of the study's mixed precision, and the faster choice (ResNet-18's train
step on an H200: 15,592 img/s in bf16 at batch 256, 6,758 in fp32 at batch 64; docs/performance.md).

The data. The study's train.csv trained, and its test.csv (351 images) was evaluated after every epoch — the
study's validation set was its test set. `--data train.csv --val-data test.csv` repeats that; choosing an epoch
or a setting by it then selects on the test images.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Architecture:
    """One CNN of the study's comparison (its Table 3)."""

    label: str  # the study's name for it, as the tables print it
    model: str  # timm 1.0 `name.tag` of the weights the study's timm 0.6.12 loaded for the bare name
    ensemble_member: bool  # one of the study's four ensemble members (its Table 4)
    epochs: int | None = None  # trained for this many epochs instead of the recipe's


ARCHITECTURES = (
    Architecture("EfficientNet-B0", "tf_efficientnet_b0.aa_in1k", ensemble_member=True),
    Architecture("ResNet-18", "resnet18.tv_in1k", ensemble_member=True),
    Architecture("MobileNetV3-Large", "mobilenetv3_large_100.ra_in1k", ensemble_member=True),
    Architecture("SKResNet-18", "skresnet18.ra_in1k", ensemble_member=True),
    Architecture("EfficientNet-B3", "tf_efficientnet_b3.aa_in1k", ensemble_member=False, epochs=55),
)
BASELINE = ARCHITECTURES[0].model  # the model of every experiment that does not compare architectures

# Every TrainConfig field the study fixed; what it left open keeps knifejax's default.
RECIPE = dict(
    model=BASELINE, pretrained="default",
    optimizer="adam", lr=1e-4, weight_decay=0.0, decay_all=True, schedule="cosine", t_max=None, eta_min=0.0,
    warmup_steps=0, batch_size=32, epochs=20, label_smoothing=0.0, precision="fp32",
    image_size=224, norm="imagenet",
    augment=True, brightness=0.2, contrast=0.0, saturation=0.0, hue=0.0, rotation=(0.0, 180.0), hflip=0.5, vflip=0.5,
)  # fmt: skip

LEARNING_RATES = (1e-2, 1e-3, 5e-4, 1e-4, 1e-5)  # its learning-rate sweep (Fig. 1, Fig. 2)
BATCH_SIZES = (16, 32, 64)  # its batch-size comparison (Table 1)

DATA_ROLES = "train.csv trains; test.csv is evaluated after every epoch (the study's validation set was its test set)"
PRECISION_NOTE = (
    "fp32 on every device; the study's fp16 mixed precision has its counterpart in `--precision bf16` on GPUs with "
    "bf16 units (Ampere or newer; not the study's V100)"
)


def summary() -> str:
    """The setting in one line, for --help."""
    r = RECIPE
    return (f"the study: {r['model']} from its ImageNet weights, {r['image_size']} px, {r['epochs']} epochs, "
            f"batch {r['batch_size']}, Adam {r['lr']:g} with per-step cosine, ImageNet mean/std, "
            f"{r['precision']}")  # fmt: skip
