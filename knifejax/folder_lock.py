"""One process at a time in a folder: a training run's directory, a rehearsal's folder.

An OS lock (`fcntl.flock` on `FOLDER/.lock`), which the kernel releases when the holder dies however it dies, so a
killed process never leaves the folder locked; the holder's PID and host are written in the file, so that a second
process stops at once with one line naming it.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from knifejax.errors import UserError


class FolderInUseError(UserError, RuntimeError):
    """Another process holds the folder."""


@contextmanager
def held(folder: Path, activity: str, instead: str, error: type[FolderInUseError] = FolderInUseError) -> Iterator[None]:
    """Hold `folder` (created if missing) for this process; another holder raises `error`: "FOLDER is being
    `activity` by process N on HOST; wait for it to finish, or stop it, or `instead`"."""
    folder.mkdir(parents=True, exist_ok=True)
    file = (folder / ".lock").open("a+")
    try:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read().strip() or "another process"
            raise error(f"{folder} is being {activity} by {holder}; wait for it to finish, or stop it, or {instead}") from None
        file.seek(0)
        file.truncate()
        file.write(f"process {os.getpid()} on {socket.gethostname()}\n")
        file.flush()
        yield
    finally:
        file.close()
