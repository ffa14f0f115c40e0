"""A data set shaped like the study's, drawn by the synthetic knives: its on-disk layout, CSV format and size, so
the experiments can be rehearsed at full scale without the photos.

    python -m experiments.make_study_data data/study-shaped            # 9,624 training + 351 test images
    python -m experiments.make_study_data data/small --images 576 --test-images 24 --max-side 96

    OUT/
      train.csv       Id,Label: ./Train/<Class_Dir>/IMG_1234.JPEG,17 (every one of the 192 classes)
      test.csv        Id,Label: ./Test/<Class_Dir>/IMG_5678.JPEG,17 (351 images of 109 classes)
      Train/<Class_Dir>/IMG_1234.JPEG, IMG_1234_br.JPEG (a brightened copy), IMG_2345.png, ...
      Test/<Class_Dir>/...
      generated.json  the arguments that made it (a second start with the same ones completes it)

Train as the study did: `--data OUT/train.csv --val-data OUT/test.csv --root OUT`. Class i is the synthetic
knives' class i (its folder named after it); the training images per class are uneven (as the study's), each
of at least one. Files are what a camera and the web give: JPEG photos of phone and camera sizes in landscape
and portrait (some turned by their EXIF orientation), a few grayscale and CMYK JPEGs, PNGs with and without an
alpha channel. The knife is drawn square and stretched to the photo's shape, so that the plain resize to a
square training size shows it undistorted. Every file is a deterministic function of the arguments and is
written atomically; the CSVs are written last, so a set they list is whole.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import multiprocessing
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance
from tqdm.auto import tqdm

from knifejax.atomic_write import write_bytes_atomically, write_text_atomically
from knifejax.data.synthetic import NUM_CLASSES, class_names, render_knife
from knifejax.errors import CommandParser, ConfigError, reported_errors
from knifejax.output_paths import check_writable_folder

STUDY_TRAIN_IMAGES, STUDY_TEST_IMAGES, STUDY_TEST_CLASSES = 9624, 351, 109

# (width, height) of the photos in landscape, and how often each occurs: phone and camera photos, web images.
# An assumption: the study reports no image sizes.
PHOTO_SIZES = {(4032, 3024): 0.25, (3264, 2448): 0.10, (2592, 1944): 0.05, (1920, 1080): 0.10, (1600, 1200): 0.15,
               (1280, 960): 0.10, (1024, 768): 0.10, (800, 600): 0.10, (1080, 1080): 0.05}  # fmt: skip
PORTRAIT = 0.4  # the share of photos taken upright
# File kinds and how often each occurs; "jpeg-exif" stores the pixels turned, with the EXIF orientation that
# turns them back.
KINDS = {"jpeg": 0.82, "jpeg-exif": 0.05, "jpeg-gray": 0.03, "jpeg-cmyk": 0.02, "png": 0.05, "png-rgba": 0.03}
VARIANT_EVERY = 8  # one training image in 8 is a brightened copy (`_br`) of another of its class
DRAWN_SIDE = 256  # the knife is drawn at most this large (training sees 224 px), then stretched to the photo


@dataclass(frozen=True)
class Picture:
    """One file of the set: everything it is made from."""

    id: str  # the CSV's Id: ./Train/<Class_Dir>/IMG_1234.JPEG
    label: int
    sample: int  # the synthetic knife's sample index
    width: int
    height: int
    kind: str
    brightened: bool


def folder_name(name: str) -> str:
    """'drop-point / wood / satin / 2 rivets' -> 'Drop_Point_Wood_Satin_2_Rivets'."""
    return "_".join(word.capitalize() for word in re.split(r"[^A-Za-z0-9]+", name) if word)


def _spread(total: int, weights: np.ndarray) -> np.ndarray:
    """`total` items over len(weights) groups, at least one each, the rest in proportion to `weights`."""
    extra = (total - len(weights)) * weights / weights.sum()
    counts = np.floor(extra).astype(int)
    counts[np.argsort(counts - extra, kind="stable")[: total - len(weights) - counts.sum()]] += 1
    return counts + 1


def plan(images: int, test_images: int, seed: int, max_side: int | None) -> list[Picture]:
    """Every file of the set, training files first, each class's in order, its brightened copies last."""
    rng = np.random.default_rng(seed)
    folders = [folder_name(name) for name in class_names(NUM_CLASSES)]
    train_counts = _spread(images, rng.lognormal(0.0, 0.5, NUM_CLASSES))
    covered = np.sort(rng.choice(NUM_CLASSES, min(STUDY_TEST_CLASSES, test_images), replace=False))
    test_counts = np.zeros(NUM_CLASSES, int)
    test_counts[covered] = _spread(test_images, rng.lognormal(0.0, 0.5, len(covered)))
    numbers = iter(1000 + rng.permutation(images + test_images))
    sizes, size_weights = list(PHOTO_SIZES), np.array(list(PHOTO_SIZES.values()))
    kinds, kind_weights = list(KINDS), np.array(list(KINDS.values()))

    def photo(split: str, label: int, sample: int) -> Picture:
        width, height = sizes[rng.choice(len(sizes), p=size_weights / size_weights.sum())]
        if rng.random() < PORTRAIT:
            width, height = height, width
        if max_side is not None and max(width, height) > max_side:
            scale = max_side / max(width, height)
            width, height = max(16, round(width * scale)), max(16, round(height * scale))
        kind = kinds[rng.choice(len(kinds), p=kind_weights / kind_weights.sum())]
        extension = "png" if kind.startswith("png") else "JPEG"
        return Picture(f"./{split}/{folders[label]}/IMG_{next(numbers):04d}.{extension}", label, sample, width, height,
                       kind, brightened=False)  # fmt: skip

    pictures = []
    for label in range(NUM_CLASSES):
        copies = (train_counts[label] + VARIANT_EVERY // 2) // VARIANT_EVERY  # from 4 images of a class on
        originals = [photo("Train", label, sample) for sample in range(train_counts[label] - copies)]
        pictures += originals
        pictures += [_brightened(original) for original in originals[:copies]]
    for label in covered:
        pictures += [photo("Test", int(label), 100_000 + sample) for sample in range(test_counts[label])]
    return pictures


def _brightened(original: Picture) -> Picture:
    stem, extension = original.id.rsplit(".", 1)
    return Picture(**{**asdict(original), "id": f"{stem}_br.{extension}", "brightened": True})


def encode(picture: Picture, seed: int) -> bytes:
    """The file's bytes: the knife drawn square, stretched to the photo, saved as its kind says."""
    side = min(DRAWN_SIDE, max(16, min(picture.width, picture.height)))
    image = Image.fromarray(render_knife(picture.label, picture.sample, size=side, seed=seed))
    image = image.resize((picture.width, picture.height), Image.Resampling.BILINEAR)
    if picture.brightened:
        image = ImageEnhance.Brightness(image).enhance(1.4)
    out = io.BytesIO()
    if picture.kind == "png":
        image.save(out, "PNG", compress_level=1)
    elif picture.kind == "png-rgba":
        alpha = np.tile(np.linspace(255, 64, picture.width, dtype=np.uint8), (picture.height, 1))
        image.putalpha(Image.fromarray(alpha))
        image.save(out, "PNG", compress_level=1)
    elif picture.kind == "jpeg-exif":
        exif = Image.Exif()
        exif[0x0112] = 6  # orientation: turn 90 degrees clockwise to show
        image.transpose(Image.Transpose.ROTATE_90).save(out, "JPEG", quality=90, exif=exif)
    else:
        mode = {"jpeg-gray": "L", "jpeg-cmyk": "CMYK"}.get(picture.kind, "RGB")
        image.convert(mode).save(out, "JPEG", quality=90)
    return out.getvalue()


def _write(job: tuple[Path, Picture, int]) -> int:
    root, picture, seed = job
    path = root / picture.id
    if not path.exists():  # written before by a start that was stopped: files are written whole or not at all
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomically(path, encode(picture, seed))
    return path.stat().st_size


def _csv(pictures: Iterator[Picture]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["Id", "Label"])
    writer.writerows((picture.id, picture.label) for picture in pictures)
    return out.getvalue()


def generate(out: Path, images: int = STUDY_TRAIN_IMAGES, test_images: int = STUDY_TEST_IMAGES, seed: int = 0,
             max_side: int | None = None, workers: int = 0, progress: bool = True) -> dict:  # fmt: skip
    """Write the set into `out` (new, empty, or begun by the same arguments); returns its summary."""
    if images < NUM_CLASSES:
        raise ConfigError(f"--images must be at least {NUM_CLASSES} (one per class folder), not {images}")
    if test_images < 1:
        raise ConfigError(f"--test-images must be at least 1, not {test_images}")
    if max_side is not None and max_side < 16:
        raise ConfigError(f"--max-side must be at least 16 pixels, not {max_side}")
    if workers < 0:
        raise ConfigError(f"--workers must be 0 or more, not {workers}")
    arguments = {"images": images, "test_images": test_images, "seed": seed, "max_side": max_side}
    record = out / "generated.json"
    check_writable_folder(out, "OUT")
    if out.exists() and any(out.iterdir()):
        begun = json.loads(record.read_text()) if record.exists() else None
        if begun != arguments:
            made = f"was made with {begun}" if begun else "holds other files"
            raise ConfigError(f"{out} {made}; give an empty or new folder, or the same arguments to complete it")
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomically(record, json.dumps(arguments) + "\n")
    pictures = plan(images, test_images, seed, max_side)
    jobs = [(out, picture, seed) for picture in pictures]
    with tqdm(total=len(jobs), desc="writing images", unit="img", disable=not progress) as bar:
        if workers:
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                sizes = [bar.update(1) or size for size in pool.imap(_write, jobs, chunksize=8)]
        else:
            sizes = [bar.update(1) or _write(job) for job in jobs]
    write_text_atomically(out / "train.csv", _csv(p for p in pictures if p.id.startswith("./Train/")))
    write_text_atomically(out / "test.csv", _csv(p for p in pictures if p.id.startswith("./Test/")))
    test = [p for p in pictures if p.id.startswith("./Test/")]
    return {"train_images": len(pictures) - len(test), "test_images": len(test),
            "test_classes": len({p.label for p in test}), "bytes": int(sum(sizes)),
            "kinds": {kind: sum(p.kind == kind for p in pictures) for kind in KINDS}}  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    p = CommandParser(prog="python -m experiments.make_study_data", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("out", type=Path, metavar="OUT",
                   help="the folder to write (new, empty, or begun with the same arguments)")
    p.add_argument("--images", type=int, default=STUDY_TRAIN_IMAGES,
                   help=f"training images, at least one per class (default: {STUDY_TRAIN_IMAGES}, the study's)")
    p.add_argument("--test-images", type=int, default=STUDY_TEST_IMAGES,
                   help=f"test images, over up to {STUDY_TEST_CLASSES} classes (default: {STUDY_TEST_IMAGES}, the "
                   "study's)")
    p.add_argument("--seed", type=int, default=0, help="what the set is drawn from (default: 0)")
    p.add_argument("--max-side", type=int, metavar="PX",
                   help="shrink every photo to at most PX on its longer side (default: camera sizes, up to 4032)")
    p.add_argument("--workers", type=int, default=0, help="processes writing images (default: 0, this one)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    args = p.parse_args(argv)
    with reported_errors(debug=args.debug, on_interrupt=lambda: "the same command completes the set"):
        summary = generate(args.out, args.images, args.test_images, args.seed, args.max_side, args.workers,
                           progress=not args.no_progress)  # fmt: skip
        print(f"wrote {summary['train_images']} training and {summary['test_images']} test images "
              f"({summary['test_classes']} classes), {summary['bytes'] / 2**20:.1f} MiB, into {args.out}; train with "
              f"--data {args.out / 'train.csv'} --val-data {args.out / 'test.csv'} --root {args.out}")  # fmt: skip
        return summary


if __name__ == "__main__":
    main()
