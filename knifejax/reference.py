"""The PyTorch/timm reference that parity tests, benchmarks and the demo compare knifejax against.

Needs the `test` extra. The pinned CPU torch lacks torchvision's compiled operators, and torchvision's
Python part fails to import without the schemas of `nms`/`qnms`. Declaring those schemas (no kernels) lets
timm and pytorch-grad-cam import; nothing here calls the operators themselves.
"""

from __future__ import annotations

import sys
from types import ModuleType

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
