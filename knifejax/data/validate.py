"""Check a whole source before training: every row readable, every image whole, every label in range."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from knifejax.data.decode import DEFAULT_MAX_PIXELS, load_rgb
from knifejax.data.errors import DataError


@dataclass(frozen=True)
class Problem:
    """What is wrong with item ``index``; ``message`` names its file and says what to do."""

    index: int
    message: str
    row: int | None = None

    def __str__(self) -> str:
        return self.message if self.row is None else f"row {self.row}: {self.message}"


@dataclass(frozen=True)
class ValidationReport:
    """The outcome of ``validate``: ``good`` holds the ascending indices of the items without problems."""

    num_items: int
    good: np.ndarray
    problems: list[Problem]

    @property
    def num_bad(self) -> int:
        return self.num_items - self.good.size


def validate(
    source: Any,
    num_classes: int | None = None,
    skip_bad: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ValidationReport:
    """Check every item of ``source`` once: its CSV row, its label and that its image decodes fully.

    Labels must be integers in ``[0, num_classes)``, by default ``len(source.class_names)``.
    Images of file-based sources are decoded from ``source.paths`` with ``load_rgb``, at full
    size and nothing more; other sources are indexed and must give uint8 (H, W, 3) images.
    ``progress(done, total)`` is called after each item.

    Raises one ``DataError`` listing every problem found, unless ``skip_bad``: then returns the
    report, whose ``good`` indices give the usable items (``Subset(source, report.good)``).
    """
    check = ItemCheck(source, num_classes)
    return collect(source, (check(index) for index in range(len(source))), skip_bad, progress)


class ItemCheck:
    """``index -> (problems, image)``: what is wrong with item ``index`` of ``source`` (its CSV row, its image, its
    label) and, when nothing is, its decoded image, so that a caller who needs the image too (the decode cache's
    first pass, ``knifejax.data.cache.check_and_decode``) decodes each file once. Picklable, for worker processes."""

    def __init__(self, source: Any, num_classes: int | None = None):
        self.source = source
        self.num_classes = len(source.class_names) if num_classes is None else num_classes
        self.paths = getattr(source, "paths", None)
        self.row_problems = getattr(source, "row_problems", None)
        self.max_pixels = getattr(source, "max_pixels", DEFAULT_MAX_PIXELS)

    def __call__(self, index: int) -> tuple[list[str], np.ndarray | None]:
        if self.row_problems is not None and self.row_problems[index] is not None:
            return [f"{self.row_problems[index]}; correct or delete the row"], None
        if self.paths is None:
            where, (image_problem, image) = f"item {index}", _indexed_image(self.source, index)
        else:
            where, (image_problem, image) = str(self.paths[index]), _file_image(self.paths[index], self.max_pixels)
        problems = [] if image_problem is None else [image_problem]
        label_problem = _label_problem(self.source.labels[index], self.num_classes)
        if label_problem is not None:
            problems.append(f"{where}: {label_problem}")
        return problems, None if problems else image


def collect(
    source: Any,
    checked: Iterable[tuple[list[str], Any]],
    skip_bad: bool = False,
    progress: Callable[[int, int], None] | None = None,
    keep: Callable[[Any], None] | None = None,
) -> ValidationReport:
    """The report of ``checked``, the ``ItemCheck`` results of every item of ``source`` in order; ``keep(image)``
    is given each good item's image, in order. Raises as ``validate`` does, unless ``skip_bad``."""
    rows = getattr(source, "row_numbers", None)
    good: list[int] = []
    problems: list[Problem] = []
    for index, (messages, image) in enumerate(checked):
        problems += [Problem(index, message, None if rows is None else rows[index]) for message in messages]
        if not messages:
            good.append(index)
            if keep is not None:
                keep(image)
        if progress is not None:
            progress(index + 1, len(source))
    report = ValidationReport(len(source), np.asarray(good, dtype=np.int64), problems)
    if problems and not skip_bad:
        raise problems_error(f"the data {describe_source(source)}", [str(p) for p in problems], report.num_items)
    return report


def _label_problem(label: Any, num_classes: int) -> str | None:
    if not isinstance(label, (int, np.integer)):
        return f"the label {label!r} is not an integer"
    if not 0 <= label < num_classes:
        return (
            f"the label {label} is outside [0, {num_classes}); "
            "correct it, or give the right classes (classes_file, num_classes)"
        )
    return None


def _file_image(path: Path, max_pixels: int) -> tuple[str | None, np.ndarray | None]:
    """(``load_rgb``'s error message, which names the file, or None; the image when the file decodes fully)."""
    try:
        return None, load_rgb(path, max_pixels)
    except DataError as error:
        return str(error), None


def _indexed_image(source: Any, index: int) -> tuple[str | None, np.ndarray | None]:
    """For sources without files: (what is wrong with the image ``source[index]`` gives, if anything; the image)."""
    try:
        image = np.asarray(source[index]["image"])
    except DataError as error:
        return f"item {index}: {error}", None
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        return f"item {index}: the image is {image.dtype} {image.shape}, not uint8 (H, W, 3)", None
    return None, image


FIX_OR_SKIP = (
    "fix or remove those rows or files (training leaves them out with --skip-bad, counting them in the run's "
    "data_report.json)"
)


def problems_error(what: str, problems: list[str], num_items: int, advice: str = FIX_OR_SKIP) -> DataError:
    """One `DataError` for every problem found in `what`: a one-line message naming the first, every one in its
    `details` (which knifejax's commands print above the error line)."""
    error = DataError(f"{len(problems)} problem(s) among the {num_items} items of {what}; the first: {problems[0]}; {advice}")
    error.details = tuple(f"  {problem}" for problem in problems)
    return error


def describe_source(source: Any) -> str:
    """The CSV file and image root of the source (or of the source a subset is taken from)."""
    source = getattr(source, "source", source)
    csv_path = getattr(source, "csv_path", None)
    root = getattr(source, "root", None)
    if csv_path is not None:
        return f"{csv_path} (image paths relative to {root})"
    return str(root) if root is not None else type(source).__name__


def refuse_duplicates(sources: dict) -> None:
    """The same image file twice -- in one CSV, or in training and validation/test data -- is a mistake that makes
    validation scores lie (a carved validation split would hold images that are also trained on)."""
    seen: dict[str, str] = {}
    problems = []
    for role, source in sources.items():
        paths = getattr(source, "paths", None)
        rows = getattr(source, "row_numbers", None)
        for index, path in enumerate(paths or ()):
            if "\0" in str(path):
                continue  # no file has that name; validate reports the row
            where = f"{role} data row {rows[index]}" if rows is not None else f"{role} data"
            key = os.path.realpath(path)
            if key in seen:
                problems.append(f"{path}: {where} repeats the image of {seen[key]}")
            else:
                seen[key] = where
    if problems:
        what = " and ".join(describe_source(s) for s in sources.values() if hasattr(s, "paths"))
        raise problems_error(what, problems, sum(len(s) for s in sources.values()),
                             advice="remove the repeated rows, or pass --allow-duplicates if they are meant")
