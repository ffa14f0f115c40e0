"""Where a command may write: judged before any work is done, so that nothing fails after an hour of computation
because of an output path."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from knifejax.errors import ConfigError


def check_writable_folder(folder: Path, flag: str) -> None:
    """The folder, or the nearest part of it that exists, must be a folder that takes new files; no part of it may
    be a link to nothing (a dataset disk that is not mounted, say). Whether it takes files is tried with a nameless
    temporary file: permissions alone do not tell (a pseudo-filesystem such as /proc, a full quota)."""
    dangling = next((p for p in (folder, *folder.parents) if p.is_symlink() and not p.exists()), None)
    if dangling is not None:
        raise ConfigError(f"{flag}: {dangling} is a link to {os.readlink(dangling)}, which does not exist; mount or "
                          "create it, or choose another place")
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ConfigError(f"{flag}: {existing} is a file, so {folder} cannot be a folder")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag}: {existing} is not writable; choose another place")
    if existing is not None:
        try:
            tempfile.TemporaryFile(dir=existing).close()
        except OSError as error:
            raise ConfigError(f"{flag}: {existing} takes no new files ({error.strerror}); choose another place") from None
