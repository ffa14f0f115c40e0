"""The PyTorch/timm reference that parity tests, benchmarks and the demo compare knifejax against.

Needs the `test` extra. The pinned CPU torch lacks torchvision's compiled operators, and torchvision's
Python part fails to import without the schemas of `nms`/`qnms`. Declaring those schemas (no kernels) lets
timm and pytorch-grad-cam import; nothing here calls the operators themselves.
"""

from __future__ import annotations

import sys
from types import ModuleType

import numpy as np

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_shim_library = None


def import_timm() -> ModuleType:
    """Import timm (and torchvision), declaring torchvision's missing operator schemas when needed."""
    global _shim_library
    import torch

    try:
        import torchvision  # noqa: F401
    except RuntimeError as err:
        if "torchvision::nms" not in str(err):
            raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        _shim_library = torch.library.Library("torchvision", "DEF")
        for schema in _SCHEMAS:
            _shim_library.define(schema)
        import torchvision  # noqa: F401
    import timm

    return timm


def randomise_batchnorm(model, seed: int) -> None:
    """Give every BatchNorm of a torch model non-trivial affine terms and running statistics, so that eps,
    momentum and the statistics' use are all exercised (fresh BatchNorms are the identity in eval mode and
    hide bugs)."""
    import torch

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
    """A random timm model (BatchNorm randomised) and the knifejax model loaded from its state dict."""
    import torch

    import knifejax as kj

    torch.manual_seed(seed)
    reference = timm.create_model(name, **kwargs)
    randomise_batchnorm(reference, seed)
    model = kj.create_model(name, seed=seed, **kwargs)
    kj.load_timm_weights(model, reference.state_dict())
    return reference, model


def nchw(x: np.ndarray):
    """A channels-last numpy batch as the channels-first torch tensor timm takes."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
