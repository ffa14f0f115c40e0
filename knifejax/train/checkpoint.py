"""Orbax checkpoints of the whole training state, with the data position and run progress beside it.

A checkpoint holds named pytrees — "model" (parameters, BatchNorm statistics, dropout RNG streams) and,
for resuming, "optimizer" (optimizer state and step) — each saved as its flat list of leaves; restoring
needs template trees of the same configuration, which a resumed run builds anyway, and may ask for only
some of them (`load_run` reads "model" alone). Typed PRNG keys are stored as their raw key data. The progress (epoch, batch
within the epoch, the epoch's running sums, best validation score) is a JSON item of the same checkpoint,
so state and data position are saved and restored together. Orbax writes each checkpoint under a temporary
name and renames it when complete, so a process killed mid-save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from knifejax.errors import MissingError, UserError


def _is_key(leaf: Any) -> bool:
    return isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _to_saveable(tree: Any) -> list:
    return [jax.random.key_data(x) if _is_key(x) else x for x in jax.tree.leaves(tree)]


def _abstract(leaf: Any) -> jax.ShapeDtypeStruct:
    if _is_key(leaf):
        leaf = jax.random.key_data(leaf)
    return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding)


def _from_saved(template: Any, leaves: list) -> Any:
    restored = [
        jax.random.wrap_key_data(saved, impl=jax.random.key_impl(t)) if _is_key(t) else saved
        for t, saved in zip(jax.tree.leaves(template), leaves)
    ]
    return jax.tree.unflatten(jax.tree.structure(template), restored)


# What tensorstore reports as `[os_error_code='N']` when the file system refuses a write.
_REFUSALS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES)


def _environment_refusal(error: Exception) -> int | None:
    """The errno of a full disk or a read-only folder behind an Orbax save error: tensorstore raises a plain
    ValueError that carries it only in its text."""
    if isinstance(error, OSError) and error.errno in _REFUSALS:
        return error.errno
    found = re.search(r"os_error_code='(\d+)'", str(error))
    return int(found.group(1)) if found and int(found.group(1)) in _REFUSALS else None


class CheckpointWriteError(UserError, OSError):
    """The file system refused a checkpoint: full, over quota or read-only. The message says where and what to do."""

    def __init__(self, *, errno: int, strerror: str) -> None:
        super().__init__(errno, strerror)

    def __str__(self) -> str:
        return self.strerror


class Checkpoints:
    """The checkpoints kept in one folder (`max_to_keep` newest), indexed by an integer step."""

    def __init__(self, directory: str | Path, max_to_keep: int = 1, create: bool = True):
        """`create=False` to read: a missing folder is then no checkpoint, and nothing is created."""
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, enable_async_checkpointing=False, create=create
        )
        self.manager = ocp.CheckpointManager(Path(directory).absolute(), options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, trees: dict[str, Any], progress: dict) -> None:
        if step in self.manager.all_steps():
            return  # a resumed run recomputing a checkpoint it had already written: identical content
        items = {name: ocp.args.StandardSave(_to_saveable(tree)) for name, tree in trees.items()}
        try:
            self.manager.save(step, args=ocp.args.Composite(progress=ocp.args.JsonSave(progress), **items))
            self.manager.wait_until_finished()
        except Exception as error:
            refusal = _environment_refusal(error)
            if refusal is None:
                raise
            raise CheckpointWriteError(
                errno=refusal,
                strerror=f"cannot write checkpoint step {step} in {self.manager.directory}: {os.strerror(refusal)}; "
                "the previous checkpoint is intact; free space (or choose another --run), then run the same command "
                "again to resume",
            ) from error

    def restore(self, templates: dict[str, Any], step: int | None = None) -> tuple[dict[str, Any], dict]:
        """The trees named in `templates` as saved at `step` (default the latest), shaped and placed like
        their templates, and the progress saved with them."""
        step = self.manager.latest_step() if step is None else step
        if step is None:
            raise MissingError(f"no checkpoint in {self.manager.directory}")
        items = {
            name: ocp.args.StandardRestore([_abstract(x) for x in jax.tree.leaves(tree)])
            for name, tree in templates.items()
        }
        restored = self.manager.restore(step, args=ocp.args.Composite(progress=ocp.args.JsonRestore(), **items))
        trees = {name: _from_saved(tree, list(restored[name])) for name, tree in templates.items()}
        return trees, dict(restored["progress"])

    def close(self) -> None:
        self.manager.close()
