"""Orbax checkpoints of the whole training state, with the data position, run progress and checksums beside it.

A checkpoint holds named pytrees — "model" (parameters, BatchNorm statistics, dropout RNG streams) and,
for resuming, "optimizer" (optimizer state and step) — each saved as a tree of its arrays named by their
paths (`params.layer1.0.conv1.weight`, `opt_state.0.inner_state.1.mu.fc.bias`, ...), so a renamed module is
refused by name instead of being loaded into its neighbour's place, and a checkpoint can be inspected with
Orbax by name. Restoring needs template trees of the same configuration, which a resumed run builds anyway,
and may ask for only some of them (`load_run` reads "model" alone). Typed PRNG keys are stored as their raw
key data. The progress (epoch, batch within the epoch, the epoch's running sums, best validation score) is a
JSON item of the same checkpoint, so state and data position are saved and restored together.

Each array's CRC-32, dtype and shape are a JSON item too ("checksums"), written with the arrays and checked
against what is read back on every restore: Orbax verifies nothing of the data it reads (its zarr3 layout
checksums only the shard index), and a flipped bit in a parameter file otherwise loads as a plausible
number or a NaN. Orbax writes each checkpoint under a temporary name and renames it when complete, so a
process killed mid-save leaves the previous checkpoint intact.

Checkpoints written before the trees were named hold each tree as the flat list of its leaves and carry no
checksums; they are read as they are (the template's leaves in order), refused only when their values are
not finite, which training never saves.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import zlib
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from knifejax.errors import ENVIRONMENT_ERRNOS, MissingError, UserError
from knifejax.io.errors import CheckpointError

CHECKSUMS = "checksums"
PROGRESS = "progress"


def _is_key(leaf: Any) -> bool:
    return isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _saveable(leaf: Any) -> Any:
    return jax.random.key_data(leaf) if _is_key(leaf) else leaf


def _abstract(leaf: Any) -> jax.ShapeDtypeStruct:
    leaf = _saveable(leaf)
    return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding)


def _from_saved(template: Any, leaves: list) -> Any:
    restored = [
        jax.random.wrap_key_data(saved, impl=jax.random.key_impl(t)) if _is_key(t) else saved
        for t, saved in zip(jax.tree.leaves(template), leaves)
    ]
    return jax.tree.unflatten(jax.tree.structure(template), restored)


def _path_part(entry: Any) -> str:
    for attribute in ("key", "name", "idx"):
        if hasattr(entry, attribute):
            return str(getattr(entry, attribute))
    return str(entry)


def named_leaves(tree: Any) -> dict[str, Any]:
    """The leaves of `tree` by their dotted paths, in leaf order; the `.value` that ends every nnx variable's path
    is left out (`params.fc.weight`)."""
    named = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        parts = [_path_part(entry) for entry in path]
        if parts and parts[-1] == "value" and isinstance(path[-1], jax.tree_util.GetAttrKey):
            parts.pop()
        named[".".join(parts)] = leaf
    return named


def _nested(named: dict[str, Any]) -> dict:
    """`{"a.b": x}` -> `{"a": {"b": x}}`: the tree Orbax saves, whose keys are the module paths."""
    tree: dict = {}
    for name, leaf in named.items():
        *parents, last = name.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = leaf
    return tree


def _flat(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        flat.update(_flat(value, f"{name}.") if isinstance(value, dict) else {name: value})
    return flat


def _host(leaf: Any) -> np.ndarray:
    """The array's values on this host (one replica of a replicated array)."""
    if isinstance(leaf, jax.Array) and leaf.is_fully_replicated:
        leaf = leaf.addressable_data(0)
    return np.asarray(leaf)


def _crc32(array: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(array).reshape(-1).view(np.uint8))


def _describe(leaf: Any) -> dict:
    """What the checksums item records of one array."""
    array = _host(leaf)
    return {"crc32": _crc32(array), "dtype": str(array.dtype), "shape": list(array.shape)}


def _environment_refusal(error: Exception) -> int | None:
    """The errno of a full disk or a read-only folder behind an Orbax save error: tensorstore raises a plain
    ValueError that carries it only in its text."""
    if isinstance(error, OSError) and error.errno in ENVIRONMENT_ERRNOS:
        return error.errno
    found = re.search(r"os_error_code='(\d+)'", str(error))
    return int(found.group(1)) if found and int(found.group(1)) in ENVIRONMENT_ERRNOS else None


class _DropRecords(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


ORBAX_FILES = str(Path(ocp.__file__).parent)


def _through_orbax(traceback: Any) -> bool:
    """Whether a traceback passes through Orbax's own files."""
    while traceback is not None:
        if traceback.tb_frame.f_code.co_filename.startswith(ORBAX_FILES):
            return True
        traceback = traceback.tb_next
    return False


class _AbandonedWriteRecords(logging.Filter):
    """Drops what a write of a save given up on reports when it fails later, after the save returned: records of
    level ERROR or above logged from Orbax's files (its threads, through `absl`) or carrying an exception raised
    through them (an asyncio task of its event loop, through `asyncio`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        raised = record.exc_info[2] if record.exc_info else None
        return not (record.pathname.startswith(ORBAX_FILES) or _through_orbax(raised))


_ABANDONED_WRITES = _AbandonedWriteRecords()
_LOGGERS_OF_ABANDONED_WRITES = ("absl", "asyncio")


def _is_closed_loop_report(report: Any) -> bool:
    return isinstance(report.exc_value, RuntimeError) and str(report.exc_value) == "Event loop is closed"


@contextlib.contextmanager
def _orbax_noise_held_back() -> Iterator[Callable[[], None]]:
    """Hold back what Orbax prints around a failed save or restore, so that the error it raises is the one line the
    user sees; yields `abandoned`, to call when the save or restore failed (a restore of a damaged checkpoint gives up
    on reads still in flight, which report on the closed event loop as a save's abandoned writes do).

    Orbax logs every failed write of its worker threads with a traceback through `absl` (about 230 lines on a
    full disk): the records of `absl` are dropped for the duration of the call, and the logger is left as it
    was. The tensorstore writes still in flight when a save gives up complete later, at their own pace, onto
    Orbax's event loop, which is closed by then: each prints a "RuntimeError: Event loop is closed" traceback
    as an unraisable exception, during the call and after it. Those reports are dropped during the call. Once
    `abandoned` was called, and for the rest of the process (nothing can tell when the abandoned writes are
    done), so is whatever those writes report later, and only that: the closed-loop reports and any other whose
    traceback passes through Orbax, and the errors logged from Orbax or about an exception raised through it, on
    `absl` and `asyncio` (a write failing after the save returned: seen under load, 7 to 36 lines after the
    error line).
    """
    logger = logging.getLogger("absl")
    drop = _DropRecords()
    previous = sys.unraisablehook
    kept = []

    def unraisable(report: Any) -> None:
        if not (_is_closed_loop_report(report) or (kept and _through_orbax(report.exc_traceback))):
            previous(report)

    logger.addFilter(drop)
    sys.unraisablehook = unraisable
    try:
        yield lambda: kept.append(True)
    finally:
        logger.removeFilter(drop)
        if kept:
            for name in _LOGGERS_OF_ABANDONED_WRITES:  # the same filter object is not added twice
                logging.getLogger(name).addFilter(_ABANDONED_WRITES)
        if sys.unraisablehook is unraisable and not kept:
            sys.unraisablehook = previous


class CheckpointWriteError(UserError, OSError):
    """The file system refused a checkpoint: full, over quota or read-only. The message says where and what to do."""

    def __init__(self, *, errno: int, strerror: str) -> None:
        super().__init__(errno, strerror)

    def __str__(self) -> str:
        return self.strerror


class CheckpointDamagedError(CheckpointError):
    """A checkpoint's files cannot be read or do not match the checksums saved with them."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint holds other arrays (names, shapes or dtypes) than the model asking for it."""


class Checkpoints:
    """The checkpoints kept in one folder (`max_to_keep` newest), indexed by an integer step."""

    def __init__(self, directory: str | Path, max_to_keep: int = 1, create: bool = True):
        """`create=False` to read: a missing folder is then no checkpoint, and nothing is created."""
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, enable_async_checkpointing=False, create=create
        )
        self.directory = Path(directory).absolute()
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, trees: dict[str, Any], progress: dict) -> None:
        if step in self.manager.all_steps():
            return  # a resumed run recomputing a checkpoint it had already written: identical content
        named = {name: {key: _saveable(leaf) for key, leaf in named_leaves(tree).items()} for name, tree in trees.items()}
        checksums = {name: {key: _describe(leaf) for key, leaf in arrays.items()} for name, arrays in named.items()}
        items = {name: ocp.args.StandardSave(_nested(arrays)) for name, arrays in named.items()}
        args = ocp.args.Composite(**{PROGRESS: ocp.args.JsonSave(progress), CHECKSUMS: ocp.args.JsonSave(checksums)}, **items)
        with _orbax_noise_held_back() as abandoned:
            try:
                self.manager.save(step, args=args)
                self.manager.wait_until_finished()
            except Exception as error:
                abandoned()
                refusal = _environment_refusal(error)
                if refusal is None:
                    raise
                raise CheckpointWriteError(
                    errno=refusal,
                    strerror=f"cannot write checkpoint step {step} in {self.directory}: {os.strerror(refusal)}; "
                    "the previous checkpoint is intact; free space (or choose another --run), then run the same "
                    "command again to resume",
                ) from error

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def restore(
        self, templates: dict[str, Any], among: Collection[int] | None = None, *,
        fall_back: Callable[[str], None] | None = None,
    ) -> tuple[dict[str, Any], dict]:  # fmt: skip
        """The trees named in `templates` as saved at the newest step (of those kept, or of `among`), shaped and
        placed like their templates, and the progress saved with them; every array checked against its checksum.

        A damaged checkpoint raises `CheckpointDamagedError` naming it; with `fall_back`, the damaged step is
        reported through it instead, and the next older step is tried.
        """
        steps = sorted(self.manager.all_steps() if among is None else among, reverse=True)
        if not steps:
            raise MissingError(f"no checkpoint in {self.directory}")
        for index, tried in enumerate(steps):
            try:
                return self._restore(templates, tried)
            except CheckpointDamagedError as damage:
                if fall_back is None or index + 1 == len(steps):
                    raise CheckpointDamagedError(
                        f"{damage}; delete that folder to go back to the checkpoint before it, if there is one, or "
                        "train the run again"
                    ) from damage.__cause__
                fall_back(f"warning: {damage}; falling back to step {steps[index + 1]}")
        raise AssertionError("unreachable")

    def _restore(self, templates: dict[str, Any], step: int) -> tuple[dict[str, Any], dict]:
        folder = self.directory / str(step)
        if not (folder / CHECKSUMS).is_dir():
            return self._restore_unnamed(templates, step)
        expected = self._read(step, {CHECKSUMS: ocp.args.JsonRestore()})[CHECKSUMS]
        wanted = {name: named_leaves(tree) for name, tree in templates.items()}
        for name, leaves in wanted.items():
            _check_same_arrays(folder, name, leaves, expected.get(name))
        restored = self._read(
            step,
            {
                PROGRESS: ocp.args.JsonRestore(),
                **{name: ocp.args.StandardRestore(_nested({k: _abstract(v) for k, v in leaves.items()}))
                   for name, leaves in wanted.items()},
            },
        )  # fmt: skip
        trees = {}
        for name, leaves in wanted.items():
            arrays = _flat(dict(restored[name]))
            damaged = [key for key in leaves if _describe(arrays[key])["crc32"] != expected[name][key]["crc32"]]
            if damaged:
                raise CheckpointDamagedError(
                    f"{folder} is damaged: {name} array {damaged[0]} does not match the checksum saved with it "
                    f"({len(damaged)} of {len(leaves)} arrays do not)"
                )
            trees[name] = _from_saved(templates[name], [arrays[key] for key in leaves])
        return trees, dict(restored[PROGRESS])

    def _restore_unnamed(self, templates: dict[str, Any], step: int) -> tuple[dict[str, Any], dict]:
        """A checkpoint of the earlier layout: each tree the flat list of its leaves, without checksums."""
        restored = self._read(
            step,
            {
                PROGRESS: ocp.args.JsonRestore(),
                **{name: ocp.args.StandardRestore([_abstract(x) for x in jax.tree.leaves(tree)])
                   for name, tree in templates.items()},
            },
        )  # fmt: skip
        trees = {name: _from_saved(tree, list(restored[name])) for name, tree in templates.items()}
        for name, tree in trees.items():
            for key, leaf in named_leaves(tree).items():
                if not _is_key(leaf) and jax.dtypes.issubdtype(leaf.dtype, np.inexact) and not np.isfinite(_host(leaf)).all():
                    raise CheckpointDamagedError(
                        f"{self.directory / str(step)} is damaged: {name} array {key} holds NaN or infinite values, "
                        "which training never saves"
                    )
        return trees, dict(restored[PROGRESS])

    def _read(self, step: int, items: dict[str, Any]) -> dict:
        """Orbax's restore of `items`; a folder it cannot read (truncated metadata, a missing file) is one line, and
        what the reads it gave up on report later is held back as for a failed save."""
        with _orbax_noise_held_back() as abandoned:
            try:
                return self.manager.restore(step, args=ocp.args.Composite(**items))
            except (OSError, ValueError, KeyError) as error:  # tensorstore's errors are ValueErrors, JSON's too
                abandoned()
                failure = error
        first = next((line for line in str(failure).splitlines() if line.strip()), type(failure).__name__)
        raise CheckpointDamagedError(
            f"{self.directory / str(step)} is damaged: Orbax cannot read it ({first[:300]})"
        ) from failure

    def discard_after(self, step: int) -> None:
        """Delete the checkpoints newer than `step` (damaged ones a resumed run is about to write again)."""
        for newer in self.manager.all_steps():
            if newer > step:
                self.manager.delete(newer)

    def close(self) -> None:
        self.manager.close()


def _check_same_arrays(folder: Path, name: str, leaves: dict[str, Any], saved: dict | None) -> None:
    """Refuse a checkpoint whose tree `name` holds other arrays than the template: a renamed module, another
    architecture or class count."""
    if saved is None:
        raise CheckpointMismatchError(f"{folder} holds no {name!r} tree; it was not written for this use")
    missing = [key for key in leaves if key not in saved]
    extra = [key for key in saved if key not in leaves]
    if missing or extra:
        differences = [f"{len(missing)} arrays missing (first {missing[0]})"] if missing else []
        differences += [f"{len(extra)} arrays unknown here (first {extra[0]})"] if extra else []
        raise CheckpointMismatchError(
            f"{folder} holds another model's {name}: {'; '.join(differences)}; load it with the configuration it "
            "was trained with"
        )
    for key, leaf in leaves.items():
        leaf = _abstract(leaf)
        if list(leaf.shape) != saved[key]["shape"] or str(leaf.dtype) != saved[key]["dtype"]:
            raise CheckpointMismatchError(
                f"{folder} holds {name} array {key} as {saved[key]['dtype']} {tuple(saved[key]['shape'])}, but this "
                f"model has {leaf.dtype} {tuple(leaf.shape)}; load it with the configuration it was trained with"
            )
