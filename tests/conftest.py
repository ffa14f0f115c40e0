"""Shared set-up: the PyTorch/timm reference, deterministic and without denormal slow-downs."""

import pytest


@pytest.fixture(scope="session")
def timm():
    from knifejax.reference import import_timm

    timm = import_timm()
    import torch

    # XLA:CPU flushes denormals; torch must too, or random-init models drift and crawl.
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    return timm
