"""Random-access image sources: the study's CSV files, class folders, subsets and a stratified split.

A source has ``len(source)``, ``source[i] -> {"image": uint8 (H, W, 3), "label": int}``,
``labels`` (an int64 array, read without decoding any image) and ``class_names``; file-based
sources also have ``paths`` and ``max_pixels`` (the pixel limit their images are decoded with).  Images are
decoded by ``load_rgb`` on every access, nothing cached.  Files and folders whose names start with a dot
(``.ipynb_checkpoints``, ``.DS_Store``) are never part of a dataset.
"""

from __future__ import annotations

import collections
import csv
import io
import os
import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import numpy as np

from knifejax.data.decode import DEFAULT_MAX_PIXELS, load_rgb
from knifejax.data.errors import DataError
from knifejax.data.regular_file import NotRegularFileError, open_regular

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
CSV_COLUMNS = ("Id", "Label")
# Placeholder label of a CSV row whose label could not be read; ``validate`` reports the row.
MISSING_LABEL = -1


class Source(Protocol):
    """What training, ``Subset`` and ``validate`` need from a source."""

    labels: np.ndarray
    class_names: list[str]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict[str, Any]: ...


class CsvSource:
    """Images listed in a CSV file with the header ``Id,Label``, as in the study.

    ``Id`` is an image path relative to ``root`` (default: the CSV's folder), for example
    ``./Train/<Class_Dir>/IMG_4107.JPEG``; ``Label`` is the class index.  Other columns are
    ignored.  Class names come from ``classes_file`` (line i names label i) when given; else from
    the folder holding the images when every label has its own single folder; else they are
    ``class_<i>``.  There are ``len(classes file)`` classes, or else the largest label + 1.  Images larger
    than ``max_pixels`` are bad files (``load_rgb``).

    Every data row is an item, even one that cannot be used: ``row_problems[i]`` says what is
    wrong with row ``row_numbers[i]`` (its line in the file, the header being line 1), its
    label is ``MISSING_LABEL`` and reading it raises ``DataError``.  ``validate`` reports such
    rows with everything else, and drops them with ``skip_bad=True``.
    """

    def __init__(
        self,
        csv_path: str | os.PathLike[str],
        root: str | os.PathLike[str] | None = None,
        classes_file: str | os.PathLike[str] | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.csv_path = Path(csv_path)
        self.max_pixels = max_pixels
        self.root = Path(root) if root is not None else self.csv_path.parent
        self.ids: list[str] = []
        self.row_numbers: list[int] = []
        self.row_problems: list[str | None] = []
        labels: list[int] = []
        for row_number, row, problem in _read_csv_rows(self.csv_path):
            id_, label, problem = _parse_row(row, problem)
            self.ids.append(id_)
            self.row_numbers.append(row_number)
            self.row_problems.append(problem)
            labels.append(label)
        if not self.ids:
            raise DataError(f"{self.csv_path}: no data rows below the header; list one image per row as Id,Label")
        self.labels = np.asarray(labels, dtype=np.int64)
        self.paths = [self.root / id_ for id_ in self.ids]
        if classes_file is not None:
            self.class_names = _read_class_names(Path(classes_file))
        else:
            self.class_names = _class_names_from_folders(self.ids, self.labels)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        problem = self.row_problems[index]
        if problem is not None:
            raise DataError(f"{self.csv_path}: row {self.row_numbers[index]}: {problem}")
        return {"image": load_rgb(self.paths[index], self.max_pixels), "label": int(self.labels[index])}


class ImageFolderSource:
    """One sub-folder of ``root`` per class, labelled 0..n-1 in sorted order, like torchvision's ImageFolder.

    Images are found in each class folder and below it, by extension, case-insensitively
    (``IMAGE_EXTENSIONS``), in torchvision's order.  Symlinks are followed (datasets on another disk
    are linked in); a link that leads back into a folder above it is a loop, an error naming the link,
    where torchvision would walk it until the path grows too long.  A class folder without images is an
    error, as in torchvision: it would be a class no sample can teach.
    """

    def __init__(self, root: str | os.PathLike[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.root = Path(root)
        self.max_pixels = max_pixels
        if not self.root.is_dir():
            raise DataError(f"{self.root}: no such folder")
        self.class_names = sorted(
            entry.name for entry in os.scandir(self.root) if entry.is_dir() and not _hidden(entry.name)
        )
        if not self.class_names:
            raise DataError(f"{self.root}: no class folders; put each class's images in a folder of its own")
        self.paths: list[Path] = []
        labels: list[int] = []
        for label, name in enumerate(self.class_names):
            images = _image_files(self.root / name)
            if not images:
                raise DataError(
                    f"{self.root / name}: a class folder without images ({', '.join(IMAGE_EXTENSIONS)}); "
                    "add its images or move the folder out of the dataset"
                )
            self.paths += images
            labels += [label] * len(images)
        self.labels = np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"image": load_rgb(self.paths[index], self.max_pixels), "label": int(self.labels[index])}


class Subset:
    """The items ``indices`` of ``source``, in that order; ``paths`` and CSV row details follow along."""

    def __init__(self, source: Source, indices: Sequence[int] | np.ndarray) -> None:
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        outside = indices[(indices < 0) | (indices >= len(source))]
        if outside.size:
            raise IndexError(f"indices {outside[:10].tolist()} are outside the source's {len(source)} items")
        self.source = source
        self.indices = indices
        self.labels = np.asarray(source.labels)[indices]
        self.class_names = source.class_names
        self.max_pixels = getattr(source, "max_pixels", DEFAULT_MAX_PIXELS)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.source[int(self.indices[index])]

    @property
    def paths(self) -> list[Path]:
        return self._select("paths")

    @property
    def row_numbers(self) -> list[int]:
        return self._select("row_numbers")

    @property
    def row_problems(self) -> list[str | None]:
        return self._select("row_problems")

    def _select(self, name: str) -> list[Any]:
        values = getattr(self.source, name)  # AttributeError where the source has none
        return [values[index] for index in self.indices]


def stratified_split(
    labels: Sequence[int] | np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split item indices into sorted ``(train_idx, val_idx)``, class by class.

    A class of n items gets ``floor(n * val_fraction + 0.5)`` of them in validation (half
    rounds up), clamped to 1..n-1 when ``val_fraction > 0`` and n >= 2, so such a class is in
    both parts; a class of one item stays in training.  Which items go where is random but
    fixed by ``seed`` and the class: a class's split does not change when other classes do.
    """
    labels = np.asarray(labels)
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or np.any(labels < 0):
        raise ValueError("labels must be a 1-D sequence of non-negative integers (class indices)")
    val_parts = [_val_members(labels, int(label), val_fraction, seed) for label in np.unique(labels)]
    val_idx = np.sort(np.concatenate([np.zeros(0, np.int64), *val_parts]))
    train_idx = np.setdiff1d(np.arange(labels.size, dtype=np.int64), val_idx)
    return train_idx, val_idx


def _val_members(labels: np.ndarray, label: int, val_fraction: float, seed: int) -> np.ndarray:
    members = np.flatnonzero(labels == label)
    count = int(np.floor(members.size * val_fraction + 0.5))
    if val_fraction > 0 and members.size >= 2:
        count = min(max(count, 1), members.size - 1)
    rng = np.random.default_rng([seed, label])
    return rng.permutation(members)[:count]


def _read_csv_rows(csv_path: Path) -> list[tuple[int, dict[str, str], str | None]]:
    """``(row number, {column: value}, problem or None)`` for each non-blank data row."""
    try:
        with io.TextIOWrapper(open_regular(csv_path), encoding="utf-8-sig", newline="") as file:
            reader = csv.reader(file)
            header = [name.strip() for name in next(reader, [])]
            _check_header(csv_path, header)
            return [
                (reader.line_num, dict(zip(header, row)), _row_shape_problem(row, header))
                for row in reader
                if any(value.strip() for value in row)
            ]
    except FileNotFoundError:
        raise DataError(f"{csv_path}: no such CSV file") from None
    except NotRegularFileError as error:
        raise DataError(f"{csv_path}: {error.strerror}; give the CSV file itself") from None
    except (csv.Error, UnicodeDecodeError) as error:
        raise DataError(f"{csv_path}: cannot parse it as a UTF-8 CSV file ({error})") from error
    except OSError as error:
        raise DataError(f"{csv_path}: cannot read the CSV file ({error.strerror or error})") from error


def _check_header(csv_path: Path, header: list[str]) -> None:
    missing = [name for name in CSV_COLUMNS if name not in header]
    if missing:
        raise DataError(
            f"{csv_path}: the header {header} lacks the column(s) {missing}; "
            f"the first line must name the columns, e.g. {','.join(CSV_COLUMNS)}"
        )


def _row_shape_problem(row: list[str], header: list[str]) -> str | None:
    if len(row) < len(header):
        return f"the row has {len(row)} values, fewer than the {len(header)} columns of the header"
    if len(row) > len(header):
        return (
            f"the row has {len(row)} values, more than the {len(header)} columns of the header "
            "(quote values that hold commas)"
        )
    return None


def _parse_row(row: dict[str, str], problem: str | None) -> tuple[str, int, str | None]:
    """``(Id, label, problem)``: the label is ``MISSING_LABEL`` where the row has a problem."""
    id_ = row.get("Id", "").strip()
    label_text = row.get("Label", "").strip()
    if problem is None and not id_:
        problem = "the Id (image path) is empty"
    if problem is None and "\0" in id_:
        problem = "the Id (image path) holds a NUL character"
    if problem is None and not _is_int(label_text):
        problem = f"the Label {label_text!r} is not an integer"
    return id_, MISSING_LABEL if problem else int(label_text), problem


def _is_int(text: str) -> bool:
    """Plain decimal digits only: Python's int() would also read '3_0' as 30 and other scripts' digits."""
    return re.fullmatch(r"-?[0-9]+", text) is not None


def _read_class_names(path: Path) -> list[str]:
    try:
        with open_regular(path) as file:
            lines = file.read().decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: the classes file is not UTF-8 text ({error})") from error
    except OSError as error:
        raise DataError(f"{path}: cannot read the classes file ({error.strerror or error})") from error
    names = [line.strip() for line in lines]
    while names and not names[-1]:
        names.pop()
    return names


def _class_names_from_folders(ids: list[str], labels: np.ndarray) -> list[str]:
    """The classes the image folders name, when they name them; else each label's folder or ``class_<i>``.

    Folders name the classes when each folder's rows mostly carry one label, a different one per folder, and
    those labels are exactly 0..F-1 for F folders (the study's ``./Train/<Class_Dir>/`` layout): then there are F
    classes, and a row whose label is outside them (a typo such as 99) is reported by ``validate`` with its row,
    not turned into a 100-class model.  Otherwise there are ``largest label + 1`` classes, named by their single
    folder when every label has one and all differ, else ``class_<i>``.
    """
    named = _classes_named_by_folders(ids, labels)
    if named is not None:
        return named
    num_classes = int(labels.max()) + 1 if labels.size else 0
    folders: dict[int, set[str]] = {}
    for id_, label in zip(ids, labels.tolist()):
        if label != MISSING_LABEL:
            folders.setdefault(label, set()).add(PurePosixPath(id_).parent.name)
    names = {label: next(iter(found)) for label, found in folders.items() if len(found) == 1}
    distinct = len(set(names.values())) == len(names) and "" not in names.values()
    if len(names) < len(folders) or not distinct:
        names = {}
    return [names.get(label, f"class_{label}") for label in range(num_classes)]


def _classes_named_by_folders(ids: list[str], labels: np.ndarray) -> list[str] | None:
    by_folder: dict[str, collections.Counter] = {}
    for id_, label in zip(ids, labels.tolist()):
        if label != MISSING_LABEL:
            by_folder.setdefault(PurePosixPath(id_).parent.name, collections.Counter())[label] += 1
    if len(by_folder) < 2 or "" in by_folder:
        return None
    majority = {folder: counts.most_common(1)[0][0] for folder, counts in by_folder.items()}
    if sorted(majority.values()) != list(range(len(majority))):
        return None
    return [folder for folder, _ in sorted(majority.items(), key=lambda item: item[1])]


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _image_files(folder: Path) -> list[Path]:
    """Image files in and below ``folder``, in torchvision ``make_dataset``'s order (its walk, sorted).

    Symlinks are followed; a folder met again below itself, by ``(st_dev, st_ino)``, is a loop and an error
    (reported once: the walk stops there).  Hidden files and folders are left out.
    """
    walked: list[tuple[str, list[str]]] = []
    pending = [(folder, (_identity(folder),))]
    while pending:
        directory, ancestors = pending.pop()
        try:
            entries = sorted((e for e in os.scandir(directory) if not _hidden(e.name)), key=lambda e: e.name)
        except OSError as error:
            raise DataError(f"{directory}: cannot list the folder ({error.strerror or error})") from error
        walked.append((str(directory), [e.name for e in entries if not e.is_dir()]))
        below = []
        for entry in (e for e in entries if e.is_dir()):
            identity = _identity(Path(entry.path))
            if identity in ancestors:
                raise DataError(
                    f"{entry.path}: a symlink loop, it leads back to {_ancestor(Path(entry.path), identity)}; "
                    "remove the link or point it outside the dataset"
                )
            below.append((Path(entry.path), (*ancestors, identity)))
        pending += reversed(below)
    return [
        Path(directory, name)
        for directory, names in sorted(walked)
        for name in names
        if name.lower().endswith(IMAGE_EXTENSIONS)
    ]


def _identity(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_dev, info.st_ino


def _ancestor(path: Path, identity: tuple[int, int]) -> Path:
    """The folder above ``path`` that ``identity`` names: where the loop closes."""
    return next(parent for parent in path.parents if parent.exists() and _identity(parent) == identity)
