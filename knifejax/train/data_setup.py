"""From a TrainConfig to checked, decoded data: the sources, the validation split, the decode-once caches.

Every file is checked before training (`knifejax.data.validate`): a missing, unreadable or truncated file
or a bad label stops here with one error listing them all, or, with `skip_bad`, is left out and counted.
On a first start each file is decoded once, checked and resized for the decode cache in the same pass
(`knifejax.data.cache.check_and_decode`). The check's verdict is cached beside the decoded images, keyed by
the source's fingerprint, so a resumed run does not decode every file again to check it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from knifejax.atomic_write import write_text_atomically
from knifejax.data.cache import DEFAULT_CACHE_DIR, DecodedImages, check_and_decode, decode_source, source_fingerprint
from knifejax.data.errors import DataError
from knifejax.data.open import open_source
from knifejax.data.split import Split
from knifejax.data.sources import Subset, stratified_split
from knifejax.data.validate import describe_source, problems_error, refuse_duplicates
from knifejax.train.config import TrainConfig


@dataclass
class PreparedData:
    train: Split
    val: Split
    test: Split | None
    class_names: list[str]
    report: dict  # per role: items, skipped, the problems of skipped items


def cache_dir(cfg: TrainConfig) -> Path | None:
    """The decode cache's folder, or None to keep the decoded images in memory (`--cache-dir none`; a folder named
    so is `./none`)."""
    if cfg.cache_dir is None or cfg.cache_dir == "none":
        return None
    return DEFAULT_CACHE_DIR if cfg.cache_dir == "default" else Path(cfg.cache_dir)


def _checked(source, num_classes: int, size: int, cfg: TrainConfig, role: str, log: Callable[[str], None],
             progress: bool):  # fmt: skip
    """(source without its bad items, report entry, its decoded images when the check decoded them)."""
    fingerprint = source_fingerprint(source)
    folder = cache_dir(cfg)
    verdict = None if folder is None or fingerprint is None else folder / f"{fingerprint}-checked-{num_classes}.json"
    saved = _read_verdict(verdict)
    decoded = None
    if saved is not None:
        good, problems = np.asarray(saved["good"], np.int64), saved["problems"]
    elif hasattr(source, "paths") or hasattr(source, "row_problems"):
        with tqdm(total=len(source), desc=f"checking and decoding {role} files", unit="img", leave=False,
                  disable=not progress) as bar:  # fmt: skip
            report, _, decoded = check_and_decode(source, num_classes, size, folder, cfg.workers,
                                                  progress=lambda done, total: bar.update(1))  # fmt: skip
        good, problems = report.good, [str(p) for p in report.problems]
        if verdict is not None:
            verdict.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomically(verdict, json.dumps({"good": good.tolist(), "problems": problems}))
    else:  # generated or pre-decoded sources: only labels can be wrong
        labels = np.asarray(source.labels)
        bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
        good = np.setdiff1d(np.arange(len(source)), bad)
        problems = [f"item {i}: label {labels[i]} outside 0..{num_classes - 1}" for i in bad]
    if problems and not cfg.skip_bad:
        raise problems_error(f"the {role} data {describe_source(source)}", problems, len(source))
    if problems:
        log(f"{role}: skipped {len(source) - len(good)} of {len(source)} items with problems (see data_report.json)")
    entry = {"items": len(source), "skipped": int(len(source) - len(good)), "problems": problems}
    return (source if len(good) == len(source) else Subset(source, good)), entry, decoded


def _read_verdict(path: Path | None) -> dict | None:
    """A cached check's verdict, or None when there is none or it cannot be read (then the data is checked again)."""
    try:
        saved = json.loads(path.read_text()) if path is not None and path.exists() else None
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) and {"good", "problems"} <= saved.keys() else None


def _decoded(source, size: int, cfg: TrainConfig, role: str, progress: bool, decoded: dict) -> DecodedImages:
    """The decoded images of the checked `source`: those its check decoded (`decoded[role]`), else decoded now or
    read from the cache."""
    if decoded.get(role) is not None:
        return decoded[role]
    with tqdm(total=len(source), desc=f"decoding {role} images", unit="img", leave=False, disable=not progress) as bar:
        return decode_source(source, size, cache_dir(cfg), cfg.workers, progress=lambda done, total: bar.update(1))


def prepare_data(
    cfg: TrainConfig, size: int, log: Callable[[str], None] = print, *, progress: bool = True
) -> PreparedData:
    """Open, check and decode the training, validation and (optional) test data of `cfg` at `size` px;
    `progress=False` hides the checking and decoding bars (as `fit(progress=False)` / `--no-progress` do)."""
    opened = dict(
        root=cfg.root,
        classes_file=cfg.classes_file,
        synthetic_classes=cfg.synthetic_classes,
        synthetic_per_class=cfg.synthetic_per_class,
        synthetic_size=size,
        max_pixels=cfg.max_image_pixels,
    )
    specs = {"train": cfg.data, "val": cfg.val_data, "test": cfg.test_data}
    sources = {role: open_source(spec, split=role, **opened) for role, spec in specs.items() if spec is not None}
    if not cfg.allow_duplicates:
        refuse_duplicates(sources)
    class_names = list(sources["train"].class_names)
    num_classes = cfg.num_classes or len(class_names)
    report, checked, decoded = {}, {}, {}
    for role, source in sources.items():
        checked[role], report[role], decoded[role] = _checked(source, num_classes, size, cfg, role, log, progress)
    train = _decoded(checked["train"], size, cfg, "train", progress, decoded)
    if cfg.val_data is None:
        train_idx, val_idx = stratified_split(train.labels, cfg.val_fraction, cfg.seed)
        if len(val_idx) == 0:
            raise DataError(
                f"--val-fraction {cfg.val_fraction} of the {len(train)} training images of {cfg.data} leaves no "
                "validation image; raise it or give --val-data"
            )
        train_split, val_split = Split(train, train_idx), Split(train, val_idx)
    else:
        val = _decoded(checked["val"], size, cfg, "val", progress, decoded)
        train_split, val_split = Split.whole(train), Split.whole(val)
    test_split = None
    if cfg.test_data is not None:
        test = _decoded(checked["test"], size, cfg, "test", progress, decoded)
        test_split = Split.whole(test)
    return PreparedData(train_split, val_split, test_split, class_names, report)
