"""Write a file so that a reader finds the old version or the new one, never a mix: a kill or a full disk
mid-write leaves the previous file as it was.

The bytes go to a temporary file in the same folder (so the rename cannot cross file systems), are flushed
to disk, and the temporary file is renamed over the target, which POSIX makes atomic. A failed write
removes its temporary file, and its error names the target (a failed `write` names no file). The file gets the
permissions `open` would give it (0o666 less the umask), not the temporary file's owner-only 0o600: results and
weights are for the user's group to read when their umask says so.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

from PIL import Image


def write_bytes_atomically(path: str | os.PathLike[str], data: bytes) -> None:
    path = Path(path)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        umask = _umask()
        if umask is not None:  # else the temporary file's 0o600 stays: never more open than the user asked
            os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError) and error.filename is None:  # a failed write names no file: name this one
            raise OSError(error.errno, error.strerror, str(path)) from error
        raise


def _umask() -> int | None:
    """The process's umask, read where Linux shows it: setting it to read it (`os.umask`) would change it for every
    thread of the host process meanwhile."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        return None


def write_text_atomically(path: str | os.PathLike[str], text: str) -> None:
    write_bytes_atomically(path, text.encode("utf-8"))


def save_image_atomically(path: str | os.PathLike[str], image: Image.Image, **options: Any) -> None:
    """`image.save(path, **options)`, atomically; the format follows the suffix, as PIL's own `save`."""
    encoded = io.BytesIO()
    image.save(encoded, format=Image.registered_extensions()[Path(path).suffix.lower()], **options)
    write_bytes_atomically(path, encoded.getvalue())
