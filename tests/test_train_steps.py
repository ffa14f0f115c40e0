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
from tests.tiny_model import TINY, EveryCpuPath, registered


def _batch(n=4, size=32, classes=5):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, size, size, 3), dtype=np.float32), rng.integers(0, classes, n)


@pytest.mark.slow
def test_one_sgd_step_equals_the_eager_gradient_step():
    """On the tiny CNN (parameters, BatchNorm statistics): the step's bookkeeping, whatever the network."""
    x, y = _batch()
    with registered():
        eager = kj.create_model(TINY, num_classes=5, seed=0)
        fresh = kj.create_model(TINY, num_classes=5, seed=0)
    eager.train()
    loss, grads = nnx.jit(nnx.value_and_grad(lambda m: cross_entropy(m(x), y)))(eager)
    expected = jax.tree.map(lambda p, g: p - 0.1 * g, nnx.state(eager, nnx.Param), grads)

    graphdef, state = init_state(fresh, optax.sgd(0.1))
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


def test_a_state_s_numbers_drive_the_step_and_new_numbers_reuse_its_program():
    """The recipe's numbers in the state (rate, schedule, momentum, weight decay, label smoothing) give what the
    optimizer built with them and the label_smoothing argument give, within 1e-6 relative (constants and inputs
    may round differently once, see tests/test_optim.py), and another setting runs without a new trace."""
    x, y = _batch(size=8)
    recipe = dict(schedule="cosine", total_steps=6, warmup_steps=1, momentum=0.9, weight_decay=0.01)
    numbers = kj.train.hyperparameters(0.05, **recipe, label_smoothing=0.1)
    other = kj.train.hyperparameters(0.2, "constant", momentum=0.5, weight_decay=0.01, label_smoothing=0.0)
    optimizer = kj.make_optimizer("sgd", 0.05, **recipe)
    step = make_train_step(graphdef := nnx.graphdef(EveryCpuPath(5, rngs=nnx.Rngs(0))), optimizer)
    built = make_train_step(graphdef, optimizer, label_smoothing=0.1)

    def run(step, hyper, steps=4):
        _, state = init_state(EveryCpuPath(5, rngs=nnx.Rngs(0)), optimizer, hyper=hyper)
        traces = []

        def listen(event: str, seconds: float, **kwargs) -> None:
            if event == "/jax/core/compile/jaxpr_trace_duration":
                traces.append(event)

        jax.monitoring.register_event_duration_secs_listener(listen)
        try:
            for _ in range(steps):
                state, metrics = step(state, x, y)
        finally:
            jax.monitoring.unregister_event_duration_listener(listen)
        return state, metrics, len(traces)

    traced, traced_metrics, first_traces = run(step, numbers)
    constant, constant_metrics, _ = run(built, None)
    np.testing.assert_allclose(float(traced_metrics["loss"]), float(constant_metrics["loss"]), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(traced.params), jax.tree.leaves(constant.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    schedule = kj.make_schedule(0.05, "cosine", total_steps=6, warmup_steps=1)
    assert float(kj.current_learning_rate(traced.opt_state)) == pytest.approx(float(schedule(3)), rel=1e-6)
    assert first_traces >= 1  # the listener hears the step being traced
    moved, _, traces = run(step, other, steps=1)
    assert traces == 0  # the other setting ran in the same program
    assert float(kj.current_learning_rate(moved.opt_state)) == pytest.approx(0.2)
