"""One script per experiment of the study, each a short declaration run by `experiments.runner`.

    python -m experiments.sweep_lr              Fig. 1   learning rate 1e-2 .. 1e-5 (Adam, constant rate)
    python -m experiments.sweep_scheduler       Fig. 2   per-step cosine vs constant, for each learning rate
    python -m experiments.sweep_batch           Table 1, Fig. 3   batch 16 / 32 / 64
    python -m experiments.compare_optimizers    Table 2, Fig. 4   SGD, SGD with momentum 0.9, Adam

With no arguments each runs the `quick` preset on the embedded synthetic knives (minutes on a 2-core CPU);
`--preset study --data train.csv --val-data test.csv --root DIR` runs the study's own settings. Every script
takes `--help`. This package runs from the repository root; it is not part of the installed `knifejax`.
"""

from knifejax.xla_cpu import apply_xla_cpu_flags

# Every experiment runs as `python -m experiments.<name>`, which imports this package first: the XLA:CPU setting
# is applied here, before any script's first JAX computation.
apply_xla_cpu_flags()
