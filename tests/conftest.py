"""Shared set-up: XLA:CPU's setting as knifejax's entry points apply it, and the PyTorch/timm reference,
deterministic and without denormal slow-downs."""

import pytest

from knifejax.xla_cpu import apply_xla_cpu_flags

apply_xla_cpu_flags()  # before any test's first JAX computation; subprocesses inherit it through XLA_FLAGS


@pytest.fixture(scope="session")
def timm():
    from tests.reference import import_timm

    timm = import_timm()
    import torch

    # XLA:CPU flushes denormals; torch must too, or random-init models drift and crawl.
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    return timm
