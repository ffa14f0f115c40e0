"""`apply_xla_cpu_flags`: XLA:CPU's convolutions and matrix products by Eigen, not YNNPACK.

jaxlib 0.10 hands each convolution and each matrix product to YNNPACK by default. On the project's 2-core CPU
Eigen is faster for both: train step, batch 32, 224 px, `resnet18` 1.3×, `skresnet18` 1.3×,
`vit_small_patch16_224` 1.2×, the MBConv networks level (docs/performance.md). YNNPACK keeps its elementwise
and reduction fusions, which help.

Importing knifejax changes nothing: the entry points knifejax owns (`python -m knifejax`, the experiments, the
benchmarks, the test suite) call this first, and a library user calls it once, before the first JAX
computation. XLA reads `XLA_FLAGS` only when JAX creates its first backend, and jaxlib 0.10 offers no other way
to set the option (given as `compiler_options` to one `jit` it did not take effect), so the call adds the flag to
the environment variable. A user's own setting of the flag is left as it is (to keep XLA's default, set
`XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=+individual_dot`, a no-op addition).

Called after JAX has started its CPU backend, the call cannot change it any more and says so. Whether the
backends have started is asked of `jax._src.xla_bridge.backends_are_initialized`: JAX has no public function
that answers without starting them (`jax.extend.backend` only gets or clears backends).
"""

from __future__ import annotations

import os
import warnings

FLAG = "--xla_cpu_experimental_ynn_fusion_type"
EIGEN_CONVOLUTIONS_AND_DOTS = "-individual_dot,-individual_convolution"


def apply_xla_cpu_flags() -> None:
    """Add `--xla_cpu_experimental_ynn_fusion_type=-individual_dot,-individual_convolution` to `XLA_FLAGS`
    unless it is set already; warns (and changes nothing) once JAX's CPU backend has started."""
    current = os.environ.get("XLA_FLAGS", "")
    if FLAG in current:
        return
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        import jax

        if jax.default_backend() == "cpu":
            warnings.warn(
                "apply_xla_cpu_flags was called after JAX started its CPU backend, so XLA:CPU keeps YNNPACK "
                "convolutions and matrix products, about 1.2-1.3x slower train steps for ResNet and ViT. Call it "
                f"before the first JAX computation, or start Python with XLA_FLAGS='{FLAG}={EIGEN_CONVOLUTIONS_AND_DOTS}'.",
                stacklevel=2,
            )
        return
    os.environ["XLA_FLAGS"] = f"{current} {FLAG}={EIGEN_CONVOLUTIONS_AND_DOTS}".strip()
