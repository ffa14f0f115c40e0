"""The XLA:CPU setting knifejax applies when it is imported: convolutions and matrix products by Eigen, not
YNNPACK.

jaxlib 0.10 hands each convolution and each matrix product to YNNPACK by default. On the project's 2-core CPU
Eigen is faster for both: train step, batch 32, 224 px, `resnet18` 1.3×, `skresnet18` 1.3×,
`vit_small_patch16_224` 1.2×, the MBConv networks level (docs/performance.md). YNNPACK keeps its elementwise
and reduction fusions, which help.

XLA reads `XLA_FLAGS` when JAX creates its first backend, so the flag is added at import, before any
computation. A user's own setting of the flag is left as it is (to keep XLA's default, set
`XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=+individual_dot`, a no-op addition). Imported after JAX has
already started its CPU backend, knifejax cannot change it any more and says so.
"""

from __future__ import annotations

import os
import warnings

FLAG = "--xla_cpu_experimental_ynn_fusion_type"
EIGEN_CONVOLUTIONS_AND_DOTS = "-individual_dot,-individual_convolution"


def apply_cpu_flags() -> None:
    current = os.environ.get("XLA_FLAGS", "")
    if FLAG in current:
        return
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        import jax

        if jax.default_backend() == "cpu":
            warnings.warn(
                "knifejax was imported after JAX started its CPU backend, so XLA:CPU keeps YNNPACK convolutions "
                "and matrix products, about 1.2-1.3x slower train steps for ResNet and ViT. Import knifejax before "
                f"the first JAX computation, or start Python with XLA_FLAGS='{FLAG}={EIGEN_CONVOLUTIONS_AND_DOTS}'.",
                stacklevel=3,
            )
        return
    os.environ["XLA_FLAGS"] = f"{current} {FLAG}={EIGEN_CONVOLUTIONS_AND_DOTS}".strip()
