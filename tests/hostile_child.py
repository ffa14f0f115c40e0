"""Run loads of crafted files in one child interpreter, each under an address-space limit.

`python -m tests.hostile_child JOBS.json` runs each job, `{"entry": ..., "args": [...], "headroom_mb": N}`, with
the soft RLIMIT_AS set to the process's current size plus `headroom_mb` (so a load that tried to materialise what
a tiny file declares dies with MemoryError instead of taking the machine), then lifts it again. One JSON line per
job on stdout: the exception's type, its message (stderr for the command line), and the command line's exit code.
A hang shows as the parent's timeout, a crash as a missing line.

Entries: `read_state_dict PATH`, `load_timm_weights MODEL PATH`, `create_model MODEL PATH` (as the
`pretrained_cfg_overlay={"file": PATH}` of a pretrained model), `cli ARG...` (`python -m knifejax ARG...`),
`image_folder DIR`, `validate_csv CSV`. The test-only CNN of `tests.tiny_model` is registered for them all.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import resource
import sys
import warnings

import knifejax as kj
from knifejax.cli import main as cli_main
from knifejax.data import CsvSource, ImageFolderSource, validate
from tests.tiny_model import TINY, registered

_models: dict[str, object] = {}


def _vm_bytes() -> int:
    status = open("/proc/self/status").read()
    return int(re.search(r"VmSize:\s+(\d+)", status).group(1)) * 1024


def _model(name: str):
    if name not in _models:
        _models[name] = kj.create_model(name, num_classes=4)
    return _models[name]


def _run(entry: str, args: list[str]) -> dict:
    if entry == "read_state_dict":
        kj.read_state_dict(args[0])
    elif entry == "load_timm_weights":
        kj.load_timm_weights(_model(args[0]), args[1])
    elif entry == "create_model":
        kj.create_model(args[0], num_classes=4, pretrained=True, pretrained_cfg_overlay={"file": args[1]})
    elif entry == "image_folder":
        validate(ImageFolderSource(args[0]))
    elif entry == "validate_csv":
        validate(CsvSource(args[0]))
    elif entry == "cli":
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
                cli_main(args)
        except SystemExit as exit_:
            return {"error": "SystemExit", "message": stderr.getvalue(), "code": exit_.code}
        return {"error": None, "message": stderr.getvalue(), "code": 0}
    else:
        raise ValueError(f"unknown entry {entry!r}")
    return {"error": None, "message": "", "code": 0}


def main() -> None:
    warnings.simplefilter("ignore")
    _model(TINY)  # the first JAX computations, outside every job's limit
    for job in json.load(open(sys.argv[1])):
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (_vm_bytes() + job["headroom_mb"] * 2**20, hard))
        try:
            result = _run(job["entry"], job["args"])
        except Exception as error:  # noqa: BLE001 -- the parent judges what was raised
            result = {"error": type(error).__name__, "message": str(error), "code": None}
        finally:
            resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        print(json.dumps({"id": job["id"], **result}), flush=True)


if __name__ == "__main__":
    with registered():
        main()
