"""Shared set-up: XLA:CPU's setting as knifejax's entry points apply it, one compile cache for the whole run,
and the PyTorch/timm reference, deterministic, on one thread and without denormal slow-downs."""

import os
import shutil
import sys
import tempfile

import pytest

# One persistent XLA compile cache for the run, shared by the xdist workers and every process a test starts
# (they inherit the environment): many tests compile the same small train and eval steps, and a test's
# subprocesses (a trainer, the one killed and the one that resumes it) compile identical programs. Measured on
# the 2-core CPU: tests/test_run.py alone 64 -> 50 CPU-s. A cache the caller set is used as it is. Set before
# JAX reads its configuration, which it takes from the environment on import.
_OWN_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _OWN_CACHE = tempfile.mkdtemp(prefix="knifejax-tests-xla-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_CACHE
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

from knifejax.xla_cpu import apply_xla_cpu_flags  # noqa: E402

apply_xla_cpu_flags()  # before any test's first JAX computation; subprocesses inherit it through XLA_FLAGS


def pytest_unconfigure(config):
    if _OWN_CACHE is not None:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def timm():
    from tests.reference import import_timm

    timm = import_timm()
    import torch

    # XLA:CPU flushes denormals; torch must too, or random-init models drift and crawl.
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    return timm


@pytest.fixture(scope="module")
def tiny_model():
    """The test-only CNN registered for a module (`tests.tiny_model`): `pytest.mark.usefixtures("tiny_model")`."""
    from tests.tiny_model import registered

    with registered():
        yield


def pytest_collection_finish(session):
    """PyTorch on one thread. The two workers take both cores; torch's second thread for the reference's small
    tensors then competes with the other worker's JAX and spins waiting for it: the forward, Grad-CAM and ViT parity
    files took 84-88 s with it and 71-75 s without (2-core CPU, `-n 2`, A/B twice). The test files that use torch
    import it at their top, so it is imported by now in every worker that will use it."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def pytest_collection_modifyitems(items):
    """The files holding slow tests first: the two workers take whole files in this order, so the long files start
    early and the short ones fill in at the end, rather than one worker running a long file while the other idles."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: each file's own order is kept
