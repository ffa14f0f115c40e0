"""Kernels written for XLA:CPU, where its own lowering of the operation is slow, each equal to the operation it
replaces up to float rounding (docs/performance.md has the measurements). The model layers
(`knifejax.models.layers`) call them — the depthwise and patch convolutions on CPU only — and the architectures
use the layers only.

    windows.py       explicit padding and the k² strided window slices the kernels below share
    depthwise.py     depthwise convolution as sums of shifted slices, forward and backward
    patches_conv.py  convolutions with at most a few output pixels, as one matrix product over patches
    max_pool.py      max pooling as a maximum of strided slices, gradient routed as PyTorch's
    batch_norm.py    train-mode batch normalisation with a one-pass backward
"""
