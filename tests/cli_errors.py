"""How tests check that a command refused a mistake the way knifejax's entry points do."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


@contextmanager
def refused(capsys, *says: str) -> Iterator[dict]:
    """The command run inside exits with status 2 and one `knifejax: error:` line on stderr; each of `says` is in
    that line or in the lines listed above it on stdout. Yields a dict that holds both texts afterwards."""
    texts: dict = {}
    capsys.readouterr()  # what the test printed before does not count
    with pytest.raises(SystemExit) as exit_info:
        yield texts
    texts["out"], texts["err"] = capsys.readouterr()
    assert exit_info.value.code == 2, texts
    assert re.fullmatch(r"knifejax: error: [^\n]+\n", texts["err"]), texts["err"]
    for text in says:
        assert text in texts["err"] + texts["out"], texts
