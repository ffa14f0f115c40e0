"""Write a file so that a reader finds the old version or the new one, never a mix: a kill or a full disk
mid-write leaves the previous file as it was.

The bytes go to a temporary file in the same folder (so the rename cannot cross file systems), are flushed
to disk, and the temporary file is renamed over the target, which POSIX makes atomic. A failed write
removes its temporary file.
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
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_text_atomically(path: str | os.PathLike[str], text: str) -> None:
    write_bytes_atomically(path, text.encode("utf-8"))


def save_image_atomically(path: str | os.PathLike[str], image: Image.Image, **options: Any) -> None:
    """`image.save(path, **options)`, atomically; the format follows the suffix, as PIL's own `save`."""
    encoded = io.BytesIO()
    image.save(encoded, format=Image.registered_extensions()[Path(path).suffix.lower()], **options)
    write_bytes_atomically(path, encoded.getvalue())
