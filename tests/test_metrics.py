"""MAP@k and top-k accuracy against a literal transcription of the study's PyTorch `map_accuracy`."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from knifejax.metrics import map_at_k, top_k_accuracy


def torch_map_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """The study's formula: top-k of softmax probabilities, 1/(i+1) at the first hit, mean over samples."""
    probs = torch.softmax(torch.from_numpy(logits), dim=1)
    _, predicted = torch.topk(probs, k, dim=1)
    total = 0.0
    for row, label in zip(predicted.tolist(), labels.tolist()):
        for i, p in enumerate(row):
            if p == label:
                total += 1.0 / (i + 1)
                break
    return total / len(labels)


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, 12)).astype(np.float32) * 2.0
    labels = rng.integers(0, 12, size=200)
    return logits, labels


@pytest.mark.parametrize("k", [1, 3, 5, 10])
@pytest.mark.parametrize("as_probabilities", [False, True])
def test_map_at_k_matches_torch_formula(problem, k, as_probabilities):
    logits, labels = problem
    expected = torch_map_accuracy(logits, labels, k)
    scores = jax.nn.softmax(logits, axis=1) if as_probabilities else logits
    np.testing.assert_allclose(float(map_at_k(scores, labels, k)), expected, rtol=1e-6)


def test_map_at_1_is_top_1_accuracy(problem):
    logits, labels = problem
    accuracy = np.mean(logits.argmax(axis=1) == labels)
    np.testing.assert_allclose(float(map_at_k(logits, labels, 1)), accuracy, rtol=1e-6)
    np.testing.assert_allclose(float(top_k_accuracy(logits, labels, 1)), accuracy, rtol=1e-6)


def test_top_k_accuracy_counts_hits_anywhere_in_top_k(problem):
    logits, labels = problem
    ranks = (logits > logits[np.arange(len(labels)), labels][:, None]).sum(axis=1)  # 0-based, no ties
    for k in (1, 3, 5):
        np.testing.assert_allclose(float(top_k_accuracy(logits, labels, k)), np.mean(ranks < k), rtol=1e-6)


def test_hand_example():
    scores = jnp.array(
        [
            [0.1, 0.7, 0.2, 0.0],  # true 1 ranked first
            [0.4, 0.3, 0.2, 0.1],  # true 2 ranked third
            [0.4, 0.3, 0.2, 0.1],  # true 3 ranked fourth: outside the top 3
        ]
    )
    labels = jnp.array([1, 2, 3])
    np.testing.assert_allclose(float(map_at_k(scores, labels, 3)), (1 + 1 / 3 + 0) / 3, rtol=1e-6)
    np.testing.assert_allclose(float(top_k_accuracy(scores, labels, 3)), 2 / 3, rtol=1e-6)


def test_ties_follow_lax_top_k_lower_index_first():
    scores = jnp.array([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]])
    np.testing.assert_allclose(float(map_at_k(scores, jnp.array([0, 1]), 2)), (1 + 1 / 2) / 2)


def test_jit_with_static_k(problem):
    logits, labels = problem
    jitted = jax.jit(map_at_k, static_argnames="k")
    np.testing.assert_allclose(float(jitted(logits, labels, k=5)), float(map_at_k(logits, labels, 5)))
    accuracy = jax.jit(functools.partial(top_k_accuracy, k=3))
    np.testing.assert_allclose(float(accuracy(logits, labels)), float(top_k_accuracy(logits, labels, 3)))


@pytest.mark.parametrize(
    "scores_shape, labels_shape, k, message",
    [
        ((4, 3), (4,), 5, "k must be in"),
        ((4, 3), (4,), 0, "k must be in"),
        ((4, 3), (4, 1), 1, "labels must be 1-D"),
        ((4, 3), (5,), 1, "4 rows of scores but 5 labels"),
        ((12,), (12,), 1, r"scores must be \(N, C\)"),
    ],
)
def test_invalid_inputs(scores_shape, labels_shape, k, message):
    with pytest.raises(ValueError, match=message):
        map_at_k(jnp.zeros(scores_shape), jnp.zeros(labels_shape, jnp.int32), k)


def test_traced_k_is_rejected(problem):
    logits, labels = problem
    with pytest.raises(ValueError, match="k must be a Python int"):
        jax.jit(map_at_k)(logits, labels, 5)
