"""The study's transfer modes: train from scratch, transfer (every layer trains from pretrained weights), or
fine-tune with the first N feature stages frozen.

Frozen parameters receive exactly zero updates through `make_optimizer(trainable=...)`, so they stay
bit-identical, and they are excluded from weight decay by the same mask. A frozen stage's BatchNorm layers
may also be put in eval mode (`frozen_bn_eval`): they then normalise with, and never update, their
pretrained running statistics — what "frozen" usually means in practice, since batch statistics of a new
dataset would otherwise drift under frozen weights.
"""

from __future__ import annotations


import jax
from flax import nnx

from knifejax.models.layers import BatchNorm2d
from knifejax.train.optim import tree_path_name

def frozen_prefixes(model: nnx.Module, freeze_stages: int) -> tuple[str, ...]:
    """Module paths of the first `freeze_stages` of `model.stages()` (see each model's `stages`)."""
    stages = model.stages()
    if not 0 <= freeze_stages <= len(stages):
        raise ValueError(
            f"freeze_stages must be in 0..{len(stages)} for {type(model).__name__}, whose stages are "
            f"{[' + '.join(s) for s in stages]}; got {freeze_stages}"
        )
    return tuple(path for stage in stages[:freeze_stages] for path in stage)


def _under(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(path == p or path.startswith(p + ".") for p in prefixes)


def trainable_mask(prefixes: tuple[str, ...]):
    """A function params -> pytree of bools, False under any of `prefixes`, for `make_optimizer(trainable=)`."""

    def mask(params):
        return jax.tree_util.tree_map_with_path(lambda path, _: not _under(tree_path_name(path), prefixes), params)

    return mask


def freeze_batchnorm(model: nnx.Module, prefixes: tuple[str, ...]) -> int:
    """Put the BatchNorm layers under `prefixes` in eval mode (call after `model.train()`); returns their count."""
    count = 0
    for path, module in nnx.iter_modules(model):
        if isinstance(module, BatchNorm2d) and _under(".".join(map(str, path)), prefixes):
            module.use_running_average = True
            count += 1
    return count
