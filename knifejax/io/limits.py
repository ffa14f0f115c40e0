"""How much memory reading a checkpoint may cost, and readers that enforce it while they read.

A checkpoint from outside may declare anything: a zip member whose header says 1 KB can inflate to
gigabytes, a pickle of a few bytes can declare a tensor of 10^12 elements, a megabyte of pickle opcodes
can build gigabytes of empty dicts.  Headers are never trusted; instead every byte is counted as it is
decompressed or read, and reading stops with a ``CheckpointError`` once a file passes its budget:

- **data**: all that is decompressed from one file, and all the arrays materialised from it, at most
  ``MEMORY_FLOOR + MEMORY_RATIO x`` the file's size on disk (64 MiB + 32x): a real checkpoint holds its
  tensors once, uncompressed (torch) or lightly compressed (``np.savez_compressed`` of float weights
  rarely beats 2x), so 32x leaves room for tied weights and zero-filled buffers while a 1 MB zip bomb
  stops at 96 MiB;
- **pickle**: each pickle inside a torch file at most ``MAX_PICKLE_BYTES`` (8 MiB).  A state dict's
  pickle takes about 100 bytes per tensor (a training checkpoint with its optimizer state about 300), so
  real files stay far below, while unpickled objects can be ~70x their opcodes.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path
from typing import IO

from knifejax.io.errors import CheckpointError

MEMORY_FLOOR = 64 << 20
MEMORY_RATIO = 32
MAX_PICKLE_BYTES = 8 << 20
_CHUNK = 1 << 20


def memory_limit(file_size: int) -> int:
    """The bytes that reading a file of ``file_size`` bytes may decompress, and materialise, at most."""
    return MEMORY_FLOOR + MEMORY_RATIO * file_size


class Budget:
    """Bytes a file may still cost; ``spend`` raises, naming the file and what was being read, once it is out."""

    def __init__(self, path: Path, file_size: int) -> None:
        self.path = path
        self.file_size = file_size
        self.limit = memory_limit(file_size)
        self.used = 0

    def spend(self, nbytes: int, what: str) -> None:
        self.used += nbytes
        if self.used > self.limit:
            raise CheckpointError(
                f"{self.path}: {what} would take more than {self.limit} bytes, the limit for a "
                f"{self.file_size}-byte file (64 MiB + 32x its size): a zip bomb, a crafted or a damaged file; "
                "knifejax reads no further"
            )


class LimitedReader:
    """A file-like view of ``file`` that refuses to give more than ``limit`` bytes: what a pickle reads."""

    def __init__(self, file: IO[bytes], limit: int, path: Path, what: str) -> None:
        self._file, self._left, self._path, self._what = file, limit, path, what
        self._limit = limit

    def _take(self, data: bytes) -> bytes:
        self._left -= len(data)
        if self._left < 0:
            raise CheckpointError(
                f"{self._path}: the {self._what} pickle is longer than {self._limit} bytes, far more than "
                "any state dict needs; a crafted or damaged file"
            )
        return data

    def read(self, size: int = -1) -> bytes:
        size = self._left + 1 if size is None or size < 0 else min(size, self._left + 1)
        return self._take(self._file.read(size))

    def readline(self, size: int = -1) -> bytes:
        size = self._left + 1 if size is None or size < 0 else min(size, self._left + 1)
        return self._take(self._file.readline(size))


class BoundedZip:
    """A zip archive whose members are decompressed in chunks against the file's ``Budget``."""

    def __init__(self, path: Path, file: IO[bytes]) -> None:
        self.path = path
        try:
            self.archive = zipfile.ZipFile(file)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
            raise CheckpointError(f"{path}: corrupt or truncated zip archive: {error}") from error
        self.budget = Budget(path, os.fstat(file.fileno()).st_size)

    def __contains__(self, name: str) -> bool:
        return name in self.archive.NameToInfo

    def names(self) -> list[str]:
        return self.archive.namelist()

    def declared_size(self, name: str) -> int:
        """What the archive's directory claims (a hint for early messages; reads never rely on it)."""
        return self.archive.NameToInfo[name].file_size

    def open(self, name: str) -> BoundedMember:
        try:
            return BoundedMember(self, name, self.archive.open(name))
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as error:
            raise CheckpointError(f"{self.path}: cannot read member {name!r}: {error}") from error

    def read(self, name: str, size: int | None = None, limit: int | None = None) -> bytes:
        """The whole member: exactly ``size`` bytes when given (else an error), at most ``limit`` otherwise."""
        with self.open(name) as member:
            if size is not None:
                return member.read_exactly(size)
            cap = self.budget.limit if limit is None else limit
            data = member.read(cap + 1)
            if len(data) > cap:
                raise CheckpointError(
                    f"{self.path}: member {name!r} is longer than {cap} bytes, far more than any state dict "
                    "needs; a zip bomb, a crafted or a damaged file"
                )
            return data


class BoundedMember:
    """One member being decompressed; every chunk is charged to the archive's budget before it is kept."""

    def __init__(self, owner: BoundedZip, name: str, stream: IO[bytes]) -> None:
        self._owner, self.name, self._stream = owner, name, stream

    def __enter__(self) -> BoundedMember:
        return self

    def __exit__(self, *_: object) -> None:
        self._stream.close()

    def read(self, size: int) -> bytes:
        parts, left = [], size
        while left > 0:
            chunk = self._read_chunk(min(left, _CHUNK))
            if not chunk:
                break
            self._owner.budget.spend(len(chunk), f"member {self.name!r}")
            parts.append(chunk)
            left -= len(chunk)
        return b"".join(parts)

    def read_exactly(self, size: int) -> bytes:
        """``size`` bytes, and the member must end there: one byte more or less is a damaged file."""
        data = self.read(size + 1)
        if len(data) != size:
            held = f"{len(data)} bytes" if len(data) < size else "more bytes"
            raise CheckpointError(f"{self._owner.path}: member {self.name!r} holds {held}, expected {size}")
        return data

    def _read_chunk(self, size: int) -> bytes:
        try:
            return self._stream.read(size)
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error, ValueError) as error:
            raise CheckpointError(f"{self._owner.path}: cannot read member {self.name!r}: {error}") from error
