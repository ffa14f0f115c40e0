"""What an ensemble scores, resolved for each member: the same images in the same order, at its own size.

`data` may be
  - "train", "val" or "test": the members' own splits, as their runs made them (`prepare_data` with each
    run's config). When the members' splits differ (another --seed or --val-fraction), the items common to
    all are used: for "val" the images held out from every member, for "train" those every member trained on;
  - a `DataSpec`: data named as on the command line (CSV, image folder, tfds, synthetic), opened for each
    member at its size, as `evaluate` does;
  - a source (`len(source)`, `source[i] -> {"image", "label"}`), e.g. `SyntheticKnives(...)` or `CsvSource`;
  - a `DecodedImages`, or uint8 images: one (N, H, W, 3) array or a list of (H, W, 3) arrays of any sizes
    (unlabelled: for `predict_proba`).
Each member's images are resized to its size as training did (`Resize((S, S))`). What can be named — run
splits and sources with a fingerprint — gets a fingerprint that keys the feature cache; images decode only
when the cache lacks them.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from knifejax.data.cache import DecodedImages, decode_source, resize_square, source_fingerprint
from knifejax.data.errors import DataError
from knifejax.data.open import open_source
from knifejax.data.sources import ImageFolderSource
from knifejax.data.split import Split
from knifejax.data.validate import validate
from knifejax.ensemble.members import EnsembleError, Member
from knifejax.train.data_setup import PreparedData, prepare_data

RUN_SPLITS = ("train", "val", "test")
# TrainConfig fields that decide which images a run's split draws from: members must agree on them to share
# the split (the validation items themselves may differ, by --seed or --val-fraction: then the common ones are used).
_COMMON_FIELDS = ("root", "classes_file", "synthetic_classes", "synthetic_per_class", "skip_bad")
DATA_FIELDS = {
    "train": ("data", "val_data", *_COMMON_FIELDS),
    "val": ("data", "val_data", *_COMMON_FIELDS),
    "test": ("test_data", *_COMMON_FIELDS),
}


@dataclass(frozen=True)
class DataSpec:
    """Data named as on the command line, opened for each member at its own size (synthetic knives render
    at it). `synthetic_classes`/`synthetic_per_class` None take the members' training values."""

    spec: str
    root: str | None = None
    classes_file: str | None = None
    synthetic_classes: int | None = None
    synthetic_per_class: int | None = None
    split: str = "test"

    def open(self, member: Member) -> Any:
        cfg = member.config
        source = open_source(
            self.spec,
            split=self.split,
            root=self.root,
            classes_file=self.classes_file,
            synthetic_classes=self.synthetic_classes or cfg.synthetic_classes,
            synthetic_per_class=self.synthetic_per_class or cfg.synthetic_per_class,
            synthetic_size=member.size,
        )
        if isinstance(source, ImageFolderSource):
            from knifejax.inference import align_folder_labels

            source = align_folder_labels(source, member.class_names)
        return source

    def __str__(self) -> str:
        return self.spec


@dataclass
class MemberItems:
    """One member's view of the data: a fingerprint (None: not cacheable) and how to get its images."""

    fingerprint: str | None
    load: Callable[[], Split]


@dataclass
class Resolved:
    items: list[MemberItems]  # one per member, the same images in the same order
    labels: np.ndarray  # -1 where unknown
    description: str


def _hash(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"|")
    return h.hexdigest()[:20]


def split_fingerprint(split: Split) -> str:
    """Names the images of `split`: the decode cache's file (a fingerprint of the files) or their content."""
    if split.data.path is not None:
        base = split.data.path.name
    else:
        base = hashlib.sha256(np.ascontiguousarray(split.data.images[np.sort(split.indices)]).tobytes()).hexdigest()
    return _hash(base, np.asarray(split.indices, np.int64).tobytes(), split.labels.astype(np.int64).tobytes())


def _resized(images, size: int) -> np.ndarray:
    out = np.empty((len(images), size, size, 3), np.uint8)
    for i, image in enumerate(images):
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise DataError(f"image {i}: expected uint8 (H, W, 3), got {image.dtype} {image.shape}")
        out[i] = resize_square(image, size)
    return out


def _check_labels(labels: np.ndarray, num_classes: int, what: str) -> None:
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise DataError(
            f"{what}: {bad.size} label(s) outside 0..{num_classes - 1}, e.g. item {bad[0]} has {labels[bad[0]]}"
        )


class _Same:
    """A source as a cache key: equal to another opening of the same files (same fingerprint)."""

    def __init__(self, source: Any, fingerprint: str | None):
        self.source, self.key = source, fingerprint or id(source)

    def __eq__(self, other) -> bool:
        return isinstance(other, _Same) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)


def _decode_checked(same: _Same, size: int, num_classes: int) -> Split:
    source = same.source
    if hasattr(source, "paths") or hasattr(source, "row_problems"):
        validate(source, num_classes)  # one error listing every unreadable file
    return Split.whole(decode_source(source, size, cache_dir=None))


class MemberData:
    """Resolves `data` (module docstring) for `members`; each member keeps what its run prepared."""

    def __init__(self, members: list[Member], log: Callable[[str], None] = print, progress: bool = True):
        self.members = members
        self.log, self.progress = log, progress

    def prepared(self, i: int) -> PreparedData:
        member = self.members[i]
        if member.prepared is None:
            member.prepared = prepare_data(member.config, member.size, self.log, progress=self.progress)
        return member.prepared

    def resolve(self, data: Any) -> Resolved:
        if isinstance(data, str):
            if data in RUN_SPLITS:
                return self._run_split(data)
            data = DataSpec(data)
        if isinstance(data, DataSpec):
            return self._spec(data)
        if isinstance(data, DecodedImages):
            return self._decoded(data)
        if hasattr(data, "__getitem__") and hasattr(data, "labels") and not isinstance(data, np.ndarray):
            return self._source(data)
        return self._images(data)

    def _run_split(self, role: str) -> Resolved:
        first = self.members[0]
        for member in self.members[1:]:
            a, b = first.config, member.config
            diffs = [f"{name}: {getattr(a, name)!r} vs {getattr(b, name)!r}"
                     for name in DATA_FIELDS[role] if getattr(a, name) != getattr(b, name)]  # fmt: skip
            if diffs:
                raise EnsembleError(
                    f"run {member.run} was trained on other data than {first.run} ({'; '.join(diffs)}), so they "
                    f"have no common {role!r} split; give the images to use instead (a DataSpec, a source, or "
                    f"--data on the command line)"
                )
        splits = []
        for i, member in enumerate(self.members):
            split = getattr(self.prepared(i), role)
            if split is None:
                raise EnsembleError(f"run {member.run} has no --test-data; give the test images explicitly (--data)")
            splits.append(split)
        for member, split in zip(self.members[1:], splits[1:]):
            if len(split.data) != len(splits[0].data) or not np.array_equal(split.data.labels, splits[0].data.labels):
                raise EnsembleError(f"the {role} images of run {member.run} differ from those of run {first.run}")
        common = functools.reduce(np.intersect1d, [s.indices for s in splits])
        if common.size == 0:
            raise EnsembleError(
                f"no image is in the {role!r} split of every member (their --seed/--val-fraction differ); train the "
                f"members with the same --seed, or give the images to use explicitly"
            )
        if any(len(s) != common.size for s in splits):
            kind = "held out from" if role == "val" else "in the training split of" if role == "train" else "common to"
            self.log(f"the members' {role} splits differ: using the {common.size} images {kind} every member")
        common_splits = [Split(s.data, common) for s in splits]
        items = [MemberItems(split_fingerprint(s), lambda s=s: s) for s in common_splits]
        return Resolved(items, common_splits[0].labels, f"the members' {role} split ({common.size} images)")

    def _spec(self, spec: DataSpec) -> Resolved:
        items, labels = [], None
        decode = functools.cache(_decode_checked)  # members of one size and source share the decoded images
        for member in self.members:
            source = spec.open(member)
            fingerprint = source_fingerprint(source)
            num_classes = member.num_classes
            items.append(MemberItems(
                None if fingerprint is None else _hash(fingerprint, str(member.size)),
                functools.partial(decode, _Same(source, fingerprint), member.size, num_classes),
            ))  # fmt: skip
            source_labels = np.asarray(source.labels, np.int64)
            if labels is None:
                labels = source_labels
                _check_labels(labels, num_classes, str(spec))
            elif not np.array_equal(labels, source_labels):
                raise EnsembleError(f"{spec} has other labels for run {member.run} than for {self.members[0].run}")
        return Resolved(items, labels, f"{len(labels)} images from {spec}")

    def _source(self, source: Any) -> Resolved:
        labels = np.asarray(source.labels, np.int64)
        fingerprint = source_fingerprint(source)
        _check_labels(labels, self.members[0].num_classes, repr(source))
        decode = functools.cache(_decode_checked)
        items = [
            MemberItems(
                None if fingerprint is None else _hash(fingerprint, str(m.size)),
                functools.partial(decode, _Same(source, fingerprint), m.size, m.num_classes),
            )
            for m in self.members
        ]
        return Resolved(items, labels, f"{len(labels)} images from {source!r}")

    def _decoded(self, data: DecodedImages) -> Resolved:
        def at(size: int) -> Split:
            if size == data.size:
                return Split.whole(data)
            images = [data.read(i) for i in range(len(data))]  # each checked against the cache's checksums
            return Split.whole(DecodedImages(data.labels, data.class_names, size, None, _resized(images, size)))

        base = None if data.path is None else _hash(data.path.name, data.labels.tobytes())
        items = [MemberItems(None if base is None else _hash(base, str(m.size)), functools.partial(at, m.size))
                 for m in self.members]  # fmt: skip
        return Resolved(items, data.labels, f"{len(data)} decoded images")

    def _images(self, images: Any) -> Resolved:
        if isinstance(images, np.ndarray) and images.ndim == 3:
            images = images[None]
        images = list(images) if not isinstance(images, np.ndarray) else images
        labels = np.full(len(images), -1, np.int64)
        names = self.members[0].class_names

        @functools.cache
        def at(size: int) -> Split:
            return Split.whole(DecodedImages(labels, names, size, None, _resized(images, size)))

        return Resolved([MemberItems(None, functools.partial(at, m.size)) for m in self.members], labels,
                        f"{len(labels)} images")  # fmt: skip
