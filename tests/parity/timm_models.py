"""Random timm reference models and their knifejax twins, for parity tests."""

from __future__ import annotations

import numpy as np
import torch

import knifejax as kj


def randomise_batchnorm(model: torch.nn.Module, seed: int) -> None:
    """Give every BatchNorm non-trivial affine terms and running statistics, so that eps, momentum and
    the statistics' use are all exercised (fresh BNs are the identity in eval mode and hide bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)


def reference_pair(timm, name: str, seed: int = 0, **kwargs):
    """A random timm model (BatchNorm randomised) and a knifejax model loaded from its state dict."""
    torch.manual_seed(seed)
    reference = timm.create_model(name, **kwargs)
    randomise_batchnorm(reference, seed)
    model = kj.create_model(name, seed=seed, **kwargs)
    kj.load_timm_weights(model, reference.state_dict())
    return reference, model


def nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def relative_error(ours, theirs) -> float:
    """max |ours - theirs| / max |theirs|."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    return float(np.max(np.abs(ours - theirs)) / max(np.max(np.abs(theirs)), 1e-30))
