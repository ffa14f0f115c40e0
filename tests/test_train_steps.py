"""The jit train/eval steps compute what the model computes: one SGD step equals params - lr * grad of the
eager model, BatchNorm statistics advance, and eval uses running statistics."""

import jax
import numpy as np
import optax
import pytest
from flax import nnx

import knifejax as kj
from knifejax.train.steps import cross_entropy, init_state, make_eval_step, make_train_step, to_model
from tests.jitted import forward


def _batch(n=4, size=32, classes=5):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, size, size, 3), dtype=np.float32), rng.integers(0, classes, n)


@pytest.mark.slow
def test_one_sgd_step_equals_the_eager_gradient_step():
    x, y = _batch()
    eager = kj.create_model("resnet18", num_classes=5, seed=0)
    eager.train()
    loss, grads = nnx.jit(nnx.value_and_grad(lambda m: cross_entropy(m(x), y)))(eager)
    expected = jax.tree.map(lambda p, g: p - 0.1 * g, nnx.state(eager, nnx.Param), grads)

    graphdef, state = init_state(kj.create_model("resnet18", num_classes=5, seed=0), optax.sgd(0.1))
    state, metrics = make_train_step(graphdef, optax.sgd(0.1))(state, x, y)

    assert int(state.step) == 1
    np.testing.assert_allclose(float(metrics["loss"]), float(loss), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(expected)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    stats = nnx.state(eager, nnx.BatchStat)
    for a, b in zip(jax.tree.leaves(nnx.filter_state(state.rest, nnx.BatchStat)), jax.tree.leaves(stats)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_eval_step_uses_running_statistics():
    x, _ = _batch()
    graphdef, state = init_state(kj.create_model("resnet18", num_classes=5, seed=1), optax.sgd(0.0))
    logits = make_eval_step(graphdef)(state, x)
    model = to_model(graphdef, state)
    model.eval()
    assert logits.dtype == np.float32
    np.testing.assert_allclose(np.asarray(logits), np.asarray(forward(model, x)), rtol=1e-5, atol=1e-6)
