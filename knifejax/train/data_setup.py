"""From a TrainConfig to checked, decoded data: the sources, the validation split, the decode-once caches.

Every file is checked before training (`knifejax.data.validate`): a missing, unreadable or truncated file
or a bad label stops here with one error listing them all, or, with `skip_bad`, is left out and counted.
The check's verdict is cached beside the decoded images, keyed by the source's fingerprint, so a resumed
run does not decode every file again to check it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from knifejax.data.cache import DEFAULT_CACHE_DIR, DecodedImages, decode_source, source_fingerprint
from knifejax.data.errors import DataError
from knifejax.data.open import open_source
from knifejax.data.split import Split
from knifejax.data.sources import Subset, stratified_split
from knifejax.data.validate import validate
from knifejax.train.config import TrainConfig


@dataclass
class PreparedData:
    train: Split
    val: Split
    test: Split | None
    class_names: list[str]
    report: dict  # per role: items, skipped, the problems of skipped items


def cache_dir(cfg: TrainConfig) -> Path | None:
    if cfg.cache_dir is None:
        return None
    return DEFAULT_CACHE_DIR if cfg.cache_dir == "default" else Path(cfg.cache_dir)


def _checked(source, num_classes: int, cfg: TrainConfig, role: str, log: Callable[[str], None], progress: bool):
    """(source without its bad items, report entry)."""
    fingerprint = source_fingerprint(source)
    folder = cache_dir(cfg)
    verdict = None if folder is None or fingerprint is None else folder / f"{fingerprint}-checked-{num_classes}.json"
    if verdict is not None and verdict.exists():
        saved = json.loads(verdict.read_text())
        good, problems = np.asarray(saved["good"], np.int64), saved["problems"]
    elif hasattr(source, "paths") or hasattr(source, "row_problems"):
        with tqdm(total=len(source), desc=f"checking {role} files", unit="img", leave=False, disable=not progress) as bar:
            report = validate(source, num_classes, skip_bad=True, progress=lambda done, total: bar.update(1))
        good, problems = report.good, [str(p) for p in report.problems]
        if verdict is not None:
            verdict.parent.mkdir(parents=True, exist_ok=True)
            verdict.write_text(json.dumps({"good": good.tolist(), "problems": problems}))
    else:  # generated or pre-decoded sources: only labels can be wrong
        labels = np.asarray(source.labels)
        bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
        good = np.setdiff1d(np.arange(len(source)), bad)
        problems = [f"item {i}: label {labels[i]} outside 0..{num_classes - 1}" for i in bad]
    if problems and not cfg.skip_bad:
        shown = "\n  ".join(problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        raise DataError(
            f"{role} data {source!r}: {len(problems)} problem(s) found before training:\n  {shown}{more}\n"
            "Fix them, or pass --skip-bad to leave these items out (they are counted in the run's data_report.json)."
        )
    if problems:
        log(f"{role}: skipped {len(source) - len(good)} of {len(source)} items with problems (see data_report.json)")
    entry = {"items": len(source), "skipped": int(len(source) - len(good)), "problems": problems}
    return (source if len(good) == len(source) else Subset(source, good)), entry


def _decoded(source, size: int, cfg: TrainConfig, role: str, progress: bool) -> DecodedImages:
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
    )
    train_source = open_source(cfg.data, split="train", **opened)
    class_names = list(train_source.class_names)
    num_classes = cfg.num_classes or len(class_names)
    report = {}
    train_source, report["train"] = _checked(train_source, num_classes, cfg, "train", log, progress)
    train = _decoded(train_source, size, cfg, "train", progress)
    if cfg.val_data is None:
        train_idx, val_idx = stratified_split(train.labels, cfg.val_fraction, cfg.seed)
        if len(val_idx) == 0:
            raise DataError(f"--val-fraction {cfg.val_fraction} leaves no validation images; raise it or give --val-data")
        train_split, val_split = Split(train, train_idx), Split(train, val_idx)
    else:
        val_source, report["val"] = _checked(open_source(cfg.val_data, split="val", **opened), num_classes, cfg, "val", log, progress)
        val = _decoded(val_source, size, cfg, "val", progress)
        train_split, val_split = Split.whole(train), Split.whole(val)
    test_split = None
    if cfg.test_data is not None:
        test_source, report["test"] = _checked(
            open_source(cfg.test_data, split="test", **opened), num_classes, cfg, "test", log, progress
        )
        test = _decoded(test_source, size, cfg, "test", progress)
        test_split = Split.whole(test)
    return PreparedData(train_split, val_split, test_split, class_names, report)
