"""Ranking metrics of the knife study: MAP@k (its headline number) and top-k accuracy; the metrics every
evaluation reports (`ranking_metrics`, and `evaluation_metrics` with the loss), their standard errors, and
MAP@k by chance.

Both rank `scores` (N, C) per sample, so logits and softmax probabilities give the same result (softmax is
monotonic). Prefer logits: softmax can underflow distinct small logits to equal probabilities, creating ties
that were not there. Ties are broken as `jax.lax.top_k` does, lower class index first; `torch.topk`'s order
on exact ties is unspecified, so the study's numbers can differ from these only on exactly tied scores.

`k` must be a Python int (it fixes array shapes); both functions are jit-able with `k` static. Labels outside
[0, C) never match a prediction and score 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

Array = jax.Array


def _check_inputs(scores: Array, labels: Array, k: int) -> None:
    if scores.ndim != 2:
        raise ValueError(f"scores must be (N, C), got shape {scores.shape}")
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D class indices (N,), got shape {labels.shape}")
    if labels.shape[0] != scores.shape[0]:
        raise ValueError(f"{scores.shape[0]} rows of scores but {labels.shape[0]} labels")
    if not isinstance(k, int) or isinstance(k, bool):
        raise ValueError(f"k must be a Python int, got {k!r}")
    num_classes = scores.shape[1]
    if not 1 <= k <= num_classes:
        raise ValueError(f"k must be in [1, {num_classes}] (the number of classes), got {k}")


def _top_k_hits(scores: Array, labels: Array, k: int) -> Array:
    """(N, k) bools: whether the prediction at each rank is the true label (at most one True per row)."""
    _, predicted = jax.lax.top_k(scores, k)
    return predicted == labels[:, None]


def map_at_k(scores: Array, labels: Array, k: int = 5) -> Array:
    """Mean average precision at k with one relevant class per sample: the mean of 1/rank of the true label.

    A sample whose true label is ranked i-th (1-based) among its top `k` scores i; one without it in the top
    `k` scores 0. With k=1 this is top-1 accuracy. Equals the study's `map_accuracy` (torch.topk of softmax
    probabilities, then 1/(i+1) at the first position i predicting the true label) up to tie order.

    scores: (N, C) logits or probabilities. labels: (N,) integer class indices. Returns a float32 scalar.
    """
    return jnp.mean(reciprocal_ranks(scores, labels, k))


def reciprocal_ranks(scores: Array, labels: Array, k: int = 5) -> Array:
    """Each sample's term of MAP@k, (N,) float32: 1/rank of its true label within its top `k`, else 0.
    Their spread gives MAP@k's standard error over the samples, and paired differences between two models."""
    scores, labels = jnp.asarray(scores), jnp.asarray(labels)
    _check_inputs(scores, labels, k)
    reciprocal_rank = 1.0 / jnp.arange(1, k + 1, dtype=jnp.float32)
    return jnp.sum(_top_k_hits(scores, labels, k) * reciprocal_rank, axis=1)


def top_k_accuracy(scores: Array, labels: Array, k: int = 1) -> Array:
    """Fraction of samples whose true label is among their `k` highest scores, as a float32 scalar."""
    scores, labels = jnp.asarray(scores), jnp.asarray(labels)
    _check_inputs(scores, labels, k)
    return jnp.mean(jnp.any(_top_k_hits(scores, labels, k), axis=1).astype(jnp.float32))


def ranking_metrics(scores: Array, labels: Array) -> dict[str, Array]:
    """MAP@1, MAP@5 and top-5 accuracy of (N, C) scores, as float32 scalars (jit-able); with fewer than five
    classes, "map@5" and "acc@5" rank all C."""
    k = min(5, scores.shape[-1])
    return {
        "map@1": map_at_k(scores, labels, k=1),
        "map@5": map_at_k(scores, labels, k=k),
        "acc@5": top_k_accuracy(scores, labels, k=k),
    }


def evaluation_metrics(logits: Array, labels: Array) -> dict[str, float]:
    """Cross-entropy loss, MAP@1, MAP@5 and top-5 accuracy over a whole evaluation set (not a mean of batch
    means): what training's validation, `Predictor.evaluate` and ensembles report."""
    values = _evaluation_values(jnp.asarray(logits, jnp.float32), jnp.asarray(labels))
    return {name: float(value) for name, value in values.items()}


@jax.jit
def _evaluation_values(logits: Array, labels: Array) -> dict[str, Array]:
    """One compiled program per set's shape: run op by op, the loss and the metrics compiled about twenty small
    programs in every process, ~1 s of each training run's start on the 2-core CPU."""
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return {"loss": loss} | ranking_metrics(logits, labels)


def standard_errors(scores: Array, labels: Array) -> dict[str, float]:
    """Standard errors of MAP@1 and MAP@5 (k as `ranking_metrics` takes it) over the samples: the spread of
    their per-sample terms / sqrt(N), how much the scores would move on another sample of the same kind."""
    out = {}
    for name, k in (("map@1", 1), ("map@5", min(5, np.shape(scores)[-1]))):
        terms = np.asarray(reciprocal_ranks(scores, labels, k), np.float64)
        out[f"{name}_se"] = float(terms.std(ddof=1) / np.sqrt(len(terms))) if len(terms) > 1 else 0.0
    return out


def chance_map_at_k(num_classes: int, k: int = 5) -> float:
    """MAP@k of a uniformly random ranking of `num_classes` classes: (1 + 1/2 + ... + 1/k') / num_classes,
    k' = min(k, num_classes)."""
    return sum(1 / rank for rank in range(1, min(k, num_classes) + 1)) / num_classes
