"""One string names any data source on the command line and in configs."""

from __future__ import annotations

from pathlib import Path

from knifejax.data.decode import DEFAULT_MAX_PIXELS
from knifejax.data.errors import DataError
from knifejax.data.sources import CsvSource, ImageFolderSource
from knifejax.data.synthetic import SyntheticKnives

SPEC_HELP = "a CSV file (Id,Label), an image folder (one sub-folder per class), tfds:NAME[:SPLIT], or synthetic"


def open_source(
    spec: str,
    *,
    split: str = "train",
    root: str | None = None,
    classes_file: str | None = None,
    synthetic_classes: int = 192,
    synthetic_per_class: int = 40,
    synthetic_size: int = 64,
    max_pixels: int = DEFAULT_MAX_PIXELS,
):
    """The source `spec` names ({SPEC_HELP}).

    `split` ("train", "val" or "test") picks the synthetic set's split (validation and test get a quarter
    of `synthetic_per_class`, at least 2) and a tfds split when the spec names none. Image files with more than
    `max_pixels` pixels are bad files.
    """
    if spec == "synthetic":
        per_class = synthetic_per_class if split == "train" else max(2, synthetic_per_class // 4)
        return SyntheticKnives(synthetic_classes, per_class, size=synthetic_size, split=split)
    if spec.startswith("tfds:"):
        from knifejax.data.tfds_source import TfdsSource  # needs the tfds extra

        name, _, tfds_split = spec[len("tfds:") :].partition(":")
        return TfdsSource(name, split=tfds_split or split, data_dir=root)
    path = Path(spec)
    if path.suffix.lower() == ".csv":
        if not path.is_file():
            raise DataError(f"{path}: no such CSV file")
        return CsvSource(path, root=root, classes_file=classes_file, max_pixels=max_pixels)
    if path.is_dir():
        return ImageFolderSource(path, max_pixels=max_pixels)
    raise DataError(f"{spec!r} names no data source: give {SPEC_HELP}")


open_source.__doc__ = open_source.__doc__.format(SPEC_HELP=SPEC_HELP)
