"""What knifejax raises for mistakes a user can fix, and the one way its entry points report them.

The library raises typed exceptions whose message is one line: what is wrong, where (file, row, key or flag),
what to do. `UserError` is their common base; `DataError`, `CheckpointError` and the rest derive from it (and
from the builtin their callers already catch, `ValueError` or `RuntimeError`). Only the entry points that
knifejax owns (`python -m knifejax`, `python -m experiments.*`) turn them into text, through `reported_errors`:
`knifejax: error: <message>` on stderr and exit status 2, a full traceback only for a bug or with `--debug`.
"""

from __future__ import annotations

import argparse
import errno
import sys
import typing
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from PIL import Image

# What the environment refuses, not knifejax: a full disk, a read-only or forbidden folder (also what a
# checkpoint save reports as a refusal, `knifejax.train.checkpoint`).
ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EFBIG: "the file would exceed the size limit",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EEXIST: "a file is where a folder must be",  # mkdir(exist_ok=True) on a file
}
USER_ERROR_EXIT = 2
INTERRUPTED_EXIT = 130


class UserError(Exception):
    """A mistake the user can fix; the message says what, where and what to do, in one line.

    `details` may list more lines (every bad row of a data set, say): entry points print them on stdout,
    above the error line, as they do any further lines of a message.
    """

    details: tuple[str, ...] = ()


class ConfigError(UserError, ValueError):
    """An argument or configuration value that cannot work, found before any work starts."""


class MissingError(UserError, FileNotFoundError):
    """A run, checkpoint or ensemble the user named does not exist (yet)."""


class CommandParser(argparse.ArgumentParser):
    """argparse for knifejax's commands: a mistake in the arguments is one `knifejax: error:` line, exit 2."""

    def error(self, message: str) -> typing.NoReturn:
        print(f"knifejax: error: {message}; see {self.prog} --help", file=sys.stderr)
        raise SystemExit(USER_ERROR_EXIT)


def _environment_error(error: BaseException) -> OSError | None:
    """The `OSError` a full disk or a read-only folder raised, even when a library wrapped it in another error."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in ENVIRONMENT_ERRNOS:
            return error
        error = error.__cause__ or error.__context__
    return None


def _fail(message: str) -> None:
    print(f"knifejax: error: {' '.join(message.split())}", file=sys.stderr)
    raise SystemExit(USER_ERROR_EXIT)


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"knifejax: warning: {' '.join(str(message).removeprefix('warning: ').split())}\n"


@contextmanager
def reported_errors(*, debug: bool = False, on_interrupt: Callable[[], str] | None = None) -> Iterator[None]:
    """Run an entry point's work: a user's mistake or a refusing environment ends in one `knifejax: error:` line
    and exit 2, Ctrl-C in one `knifejax: interrupted` line (with what `on_interrupt` says) and exit 130; a bug
    keeps its traceback. `debug=True` re-raises everything, for the traceback. Warnings print as one
    `knifejax: warning:` line each, without Python's file and source line (also restored on the way out).
    Pillow's warning for an image above its own global limit is not shown: knifejax checks every image's size
    from its header against its own limit (--max-image-pixels), and its error says so."""
    previous_format = warnings.formatwarning
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
        if not debug:
            warnings.formatwarning = _one_line_warning
        try:
            yield
        except KeyboardInterrupt:
            if debug:
                raise
            hint = on_interrupt() if on_interrupt is not None else ""
            print(f"knifejax: interrupted{'; ' + hint if hint else ''}", file=sys.stderr)
            raise SystemExit(INTERRUPTED_EXIT) from None
        except UserError as error:
            if debug:
                raise
            first, *more = str(error).splitlines() or [type(error).__name__]
            for line in (*error.details, *more):
                print(line)
            _fail(f"{first.rstrip(':')}{' (listed above)' if more else ''}")
        except Exception as error:
            cause = _environment_error(error)
            if debug or cause is None:
                raise
            where = f" {cause.filename}" if cause.filename else ""
            _fail(f"cannot write{where}: {ENVIRONMENT_ERRNOS[cause.errno]} ({cause.strerror}); free space or choose "
                  "another folder, then run the same command again")
        finally:
            warnings.formatwarning = previous_format
