"""Check a whole source before training: every row readable, every image whole, every label in range."""

from __future__ import annotations

from collections.abc import Callable
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
    num_classes = len(source.class_names) if num_classes is None else num_classes
    paths = getattr(source, "paths", None)
    rows = getattr(source, "row_numbers", None)
    row_problems = getattr(source, "row_problems", None)
    good: list[int] = []
    problems: list[Problem] = []
    for index in range(len(source)):
        messages = _item_problems(source, index, num_classes, paths, row_problems)
        problems += [Problem(index, message, None if rows is None else rows[index]) for message in messages]
        if not messages:
            good.append(index)
        if progress is not None:
            progress(index + 1, len(source))
    report = ValidationReport(len(source), np.asarray(good, dtype=np.int64), problems)
    if problems and not skip_bad:
        raise problems_error(f"the data {describe_source(source)}", [str(p) for p in problems], report.num_items)
    return report


def _item_problems(
    source: Any, index: int, num_classes: int, paths: list[Path] | None, row_problems: list[str | None] | None
) -> list[str]:
    if row_problems is not None and row_problems[index] is not None:
        return [f"{row_problems[index]}; correct or delete the row"]
    if paths is None:
        where, image_problem = f"item {index}", _image_problem(source, index)
    else:
        max_pixels = getattr(source, "max_pixels", DEFAULT_MAX_PIXELS)
        where, image_problem = str(paths[index]), _file_problem(paths[index], max_pixels)
    problems = [] if image_problem is None else [image_problem]
    label_problem = _label_problem(source.labels[index], num_classes)
    if label_problem is not None:
        problems.append(f"{where}: {label_problem}")
    return problems


def _label_problem(label: Any, num_classes: int) -> str | None:
    if not isinstance(label, (int, np.integer)):
        return f"the label {label!r} is not an integer"
    if not 0 <= label < num_classes:
        return (
            f"the label {label} is outside [0, {num_classes}); "
            "correct it, or give the right classes (classes_file, num_classes)"
        )
    return None


def _file_problem(path: Path, max_pixels: int) -> str | None:
    """``load_rgb``'s error message (it names the file), or None when the file decodes fully."""
    try:
        load_rgb(path, max_pixels)
    except DataError as error:
        return str(error)
    return None


def _image_problem(source: Any, index: int) -> str | None:
    """For sources without files: what is wrong with the image ``source[index]`` gives, if anything."""
    try:
        image = np.asarray(source[index]["image"])
    except DataError as error:
        return f"item {index}: {error}"
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        return f"item {index}: the image is {image.dtype} {image.shape}, not uint8 (H, W, 3)"
    return None


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
