"""Benchmarks of knifejax, each run as `python -m benchmarks.<name>` from the repository root."""

from knifejax.xla_cpu import apply_xla_cpu_flags

# `python -m benchmarks.<name>` imports this package first: the XLA:CPU setting that knifejax's own entry points
# use is applied here, before any benchmark's first JAX computation, so the numbers are those of a knifejax run.
apply_xla_cpu_flags()
