"""Open a file from outside only when it is a regular file: a FIFO would block forever, ``/dev/zero`` never ends.

A dataset's CSV or folder can name anything the file system holds.  ``open_regular`` opens without blocking
(``O_NONBLOCK``, so a FIFO with no writer cannot hang the open itself), then checks the opened descriptor --
not the name, which could change in between -- and refuses everything but a regular file, naming what it is.
Symlinks are followed, as datasets on another disk are linked in.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class NotRegularFileError(OSError):
    """The path exists but is no regular file; ``strerror`` says what it is."""


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """``path`` opened for binary reading; ``NotRegularFileError`` (an ``OSError``) when it is not a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        if error.errno == errno.ENXIO and stat.S_ISSOCK(os.stat(path).st_mode):
            raise NotRegularFileError(0, "a socket, not a regular file", os.fspath(path)) from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
            raise NotRegularFileError(0, f"{kind}, not a regular file", os.fspath(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
