"""make_optimizer/make_schedule against torch.optim and CosineAnnealingLR on one small float32 problem."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx

from knifejax.train import current_learning_rate, decay_mask_timm, hyperparameters, make_optimizer, make_schedule

STEPS = 23
LR = {"adam": 0.05, "adamw": 0.05, "sgd": 0.05, "rmsprop": 0.01}
ETA_MIN_FRACTION = 0.1

CONFIGS = {
    "adam": dict(name="adam", weight_decay=0.1),
    "adamw": dict(name="adamw", weight_decay=0.1),
    "sgd": dict(name="sgd", momentum=0.9, weight_decay=0.01),
    "sgd-nesterov": dict(name="sgd", momentum=0.9, nesterov=True, weight_decay=0.01),
    "rmsprop": dict(name="rmsprop", weight_decay=0.01),
    "rmsprop-momentum": dict(name="rmsprop", momentum=0.9, weight_decay=0.01),
}
SCHEDULE_KWARGS = {
    "constant": dict(schedule="constant"),
    "cosine": dict(schedule="cosine", total_steps=STEPS),
    "cosine-periodic": dict(schedule="cosine-periodic", t_max=5),
}


def _problem() -> tuple[dict[str, np.ndarray], dict[str, tuple[np.ndarray, ...]]]:
    """Parameters (2-D, 1-D and 4-D) and the constants of g = a * (p - target) + c, a quadratic plus linear loss."""
    rng = np.random.default_rng(0)
    shapes = {"w": (4, 3), "b": (3,), "k": (2, 2, 3, 2)}
    params = {n: rng.normal(size=s).astype(np.float32) for n, s in shapes.items()}
    consts = {
        n: (
            rng.uniform(0.5, 2.0, size=s).astype(np.float32),
            rng.normal(size=s).astype(np.float32),
            (0.1 * rng.normal(size=s)).astype(np.float32),
        )
        for n, s in shapes.items()
    }
    return params, consts


PARAMS, CONSTS = _problem()


def _torch_run(config: dict, schedule: dict) -> tuple[dict[str, np.ndarray], list[float]]:
    """The reference: torch.optim and CosineAnnealingLR stepped every iteration; returns params and used lrs."""
    config = dict(config)
    name = config.pop("name")
    lr = LR[name]
    params = {n: torch.tensor(p, requires_grad=True) for n, p in PARAMS.items()}
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD, "rmsprop": torch.optim.RMSprop}
    optimizer = cls[name](params.values(), lr=lr, **config)
    scheduler = None
    if schedule["schedule"] != "constant":
        t_max = schedule.get("t_max") or schedule["total_steps"]
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t_max, eta_min=ETA_MIN_FRACTION * lr)
    used = []
    for _ in range(STEPS):
        with torch.no_grad():
            for n, p in params.items():
                a, target, c = (torch.from_numpy(x) for x in CONSTS[n])
                p.grad = a * (p - target) + c
        used.append(scheduler.get_last_lr()[0] if scheduler else lr)
        optimizer.step()
        if scheduler:
            scheduler.step()
    return {n: p.detach().numpy() for n, p in params.items()}, used


def _grads(params):
    return {n: CONSTS[n][0] * (p - CONSTS[n][1]) + CONSTS[n][2] for n, p in params.items()}


def _optax_run(tx: optax.GradientTransformation, steps: int = STEPS) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """`steps` updates in one jit-compiled scan; returns the params and current_learning_rate after each update."""

    def step(carry, _):
        params, opt_state = carry
        updates, opt_state = tx.update(_grads(params), opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), current_learning_rate(opt_state)

    @jax.jit
    def run(params):
        return jax.lax.scan(step, (params, tx.init(params)), length=steps)

    params = {n: jnp.asarray(p) for n, p in PARAMS.items()}
    (params, _), rates = run(params)
    return jax.tree.map(np.asarray, params), np.asarray(rates)


def _relative_error(ours: dict, reference: dict) -> float:
    scale = max(np.max(np.abs(p)) for p in reference.values())
    return max(np.max(np.abs(ours[n] - reference[n])) for n in reference) / scale


@pytest.mark.parametrize("schedule", list(SCHEDULE_KWARGS))
@pytest.mark.parametrize("config", list(CONFIGS))
def test_matches_torch(config, schedule):
    kwargs = dict(CONFIGS[config])
    name = kwargs.pop("name")
    lr = LR[name]
    eta_min = 0.0 if schedule == "constant" else ETA_MIN_FRACTION * lr
    tx = make_optimizer(name, lr, eta_min=eta_min, **SCHEDULE_KWARGS[schedule], **kwargs)
    expected, expected_rates = _torch_run(CONFIGS[config], SCHEDULE_KWARGS[schedule])
    ours, rates = _optax_run(tx)
    assert _relative_error(ours, PARAMS) > 1e-2, "the problem must move the parameters"
    assert _relative_error(ours, expected) <= 5e-5
    np.testing.assert_allclose(rates, expected_rates, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("config", [dict(name="adam", eps=0.05), dict(name="rmsprop", momentum=0.5, eps=0.05)])
def test_eps_is_added_after_the_square_root_as_torch_does(config):
    """A large eps makes sqrt(v) + eps and sqrt(v + eps) distinguishable."""
    kwargs = dict(config)
    name = kwargs.pop("name")
    eta_min = ETA_MIN_FRACTION * LR[name]
    tx = make_optimizer(name, LR[name], schedule="cosine-periodic", t_max=5, eta_min=eta_min, **kwargs)
    expected, _ = _torch_run(config, SCHEDULE_KWARGS["cosine-periodic"])
    assert _relative_error(_optax_run(tx)[0], expected) <= 5e-5


def test_torch_recursive_cosine_equals_closed_form_past_t_max():
    """torch's chainable CosineAnnealingLR.get_lr keeps the closed form beyond T_max (it cycles)."""
    base, eta_min, t_max = 0.1, 0.01, 5
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t_max, eta_min=eta_min)
    torch_rates = []
    for _ in range(4 * t_max + 3):
        torch_rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    steps = np.arange(len(torch_rates))
    closed_form = eta_min + (base - eta_min) * (1 + np.cos(np.pi * steps / t_max)) / 2
    np.testing.assert_allclose(torch_rates, closed_form, rtol=1e-12, atol=1e-15)
    periodic = make_schedule(base, "cosine-periodic", t_max=t_max, eta_min=eta_min)
    np.testing.assert_allclose([float(periodic(s)) for s in steps], closed_form, rtol=1e-6)
    held = make_schedule(base, "cosine", t_max=t_max, eta_min=eta_min)
    held_form = np.where(steps < t_max, closed_form, eta_min)
    np.testing.assert_allclose([float(held(s)) for s in steps], held_form, rtol=1e-6)


def test_periodic_cosine_keeps_precision_late_in_training():
    schedule = make_schedule(1.0, "cosine-periodic", t_max=20)
    np.testing.assert_allclose(float(schedule(40 * 100_000 + 7)), float(schedule(7)), rtol=0, atol=0)


def test_warmup_is_linear_from_zero_then_schedule_restarts():
    schedule = make_schedule(0.2, "cosine", total_steps=14, warmup_steps=4, eta_min=0.02)
    rates = np.array([float(schedule(s)) for s in range(16)])
    np.testing.assert_allclose(rates[:5], [0.0, 0.05, 0.1, 0.15, 0.2], rtol=1e-6)
    after = np.arange(11)  # cosine over total_steps - warmup_steps = 10 steps, then held
    np.testing.assert_allclose(rates[4:15], 0.02 + 0.18 * (1 + np.cos(np.pi * after / 10)) / 2, rtol=1e-6)
    np.testing.assert_allclose(rates[15], 0.02, rtol=1e-6)
    constant = make_schedule(0.3, warmup_steps=3)
    np.testing.assert_allclose([float(constant(s)) for s in range(5)], [0.0, 0.1, 0.2, 0.3, 0.3], rtol=1e-6)


# Settings of one sweep per optimizer family: the first fixes the structure (a momentum buffer, a decay term), the
# others change only numbers, including momentum and weight decay 0 under that structure.
SWEEPS = {
    "sgd": [
        dict(learning_rate=0.05, momentum=0.9, weight_decay=0.01),
        dict(learning_rate=0.02, schedule="cosine", total_steps=STEPS, eta_min=0.001),
        dict(learning_rate=0.1, momentum=0.5, weight_decay=0.01, schedule="cosine-periodic", t_max=5, warmup_steps=3),
    ],
    "adam": [
        dict(learning_rate=0.05, weight_decay=0.1),
        dict(learning_rate=0.01, schedule="cosine", total_steps=STEPS, warmup_steps=4),
    ],
    "rmsprop": [
        dict(learning_rate=0.01, momentum=0.9, weight_decay=0.01, schedule="cosine", total_steps=STEPS),
        dict(learning_rate=0.003),
    ],
}


@pytest.mark.parametrize("name", list(SWEEPS))
def test_a_sweep_s_numbers_as_inputs_give_each_setting_in_one_program(name):
    """`update(..., hyperparameters=h)` with traced numbers equals an optimizer built with them, and every setting
    reuses one trace, so one compiled program; stacked and vmapped, the settings train side by side, bit for bit
    as one by one.

    Against the built optimizer, within 1e-6 relative (rates and parameters): its numbers are constants, which
    XLA folds and contracts into multiply-adds differently from inputs, a float32 rounding here and there (the
    cosine rate was seen 1 ulp apart at some steps); a setting with momentum or weight decay 0 under a structure
    that has them adds exact zeros.
    """
    settings = SWEEPS[name]
    tx = make_optimizer(name, **settings[0])
    traces = []

    @jax.jit
    def run(params, h):
        traces.append(1)

        def step(carry, _):
            params, opt_state = carry
            updates, opt_state = tx.update(_grads(params), opt_state, params, hyperparameters=h)
            return (optax.apply_updates(params, updates), opt_state), current_learning_rate(opt_state)

        return jax.lax.scan(step, (params, tx.init(params)), length=STEPS)

    params = {n: jnp.asarray(p) for n, p in PARAMS.items()}
    numbers = [hyperparameters(**setting) for setting in settings]
    (stacked, _), stacked_rates = jax.vmap(run, in_axes=(None, 0))(params, jax.tree.map(lambda *a: jnp.stack(a), *numbers))
    for i, (setting, h) in enumerate(zip(settings, numbers)):
        (ours, _), rates = run(params, h)
        expected, expected_rates = _optax_run(make_optimizer(name, **setting))
        assert _relative_error(expected, PARAMS) > 1e-2, "the setting must move the parameters"
        assert _relative_error(jax.tree.map(np.asarray, ours), expected) <= 1e-6, setting
        np.testing.assert_allclose(np.asarray(rates), expected_rates, rtol=1e-6, err_msg=str(setting))
        for n in PARAMS:
            np.testing.assert_array_equal(np.asarray(stacked[n][i]), np.asarray(ours[n]), err_msg=f"vmap {setting} {n}")
        np.testing.assert_array_equal(np.asarray(stacked_rates[i]), np.asarray(rates))
    assert len(traces) == 1  # every setting, and the vmapped stack (which batches the one trace), share one trace


def test_logged_rate_is_the_rate_of_the_latest_update():
    tx = make_optimizer("sgd", 0.2, schedule="cosine", total_steps=6, warmup_steps=2)
    state = tx.init(PARAMS)
    assert current_learning_rate(state) == state.hyperparams["learning_rate"]
    assert float(current_learning_rate(state)) == 0.0  # before any update: the rate the first update will use
    _, rates = _optax_run(tx, steps=8)
    schedule = make_schedule(0.2, "cosine", total_steps=6, warmup_steps=2)
    np.testing.assert_allclose(rates, [float(schedule(s)) for s in range(8)], rtol=1e-6)


@pytest.mark.parametrize("name", ["adam", "adamw"])
@pytest.mark.parametrize("as_function", [True, False])
def test_decay_mask_leaves_masked_parameters_as_without_decay(name, as_function):
    mask = decay_mask_timm if as_function else decay_mask_timm(PARAMS)
    assert decay_mask_timm(PARAMS) == {"w": True, "b": False, "k": True}
    decayed, _ = _optax_run(make_optimizer(name, 0.05, weight_decay=0.1))
    masked, _ = _optax_run(make_optimizer(name, 0.05, weight_decay=0.1, mask=mask))
    plain, _ = _optax_run(make_optimizer(name, 0.05))
    np.testing.assert_array_equal(masked["b"], plain["b"])
    assert not np.array_equal(masked["b"], decayed["b"])
    for n in ("w", "k"):
        np.testing.assert_array_equal(masked[n], decayed[n])


@pytest.mark.parametrize("as_function", [True, False])
def test_frozen_parameters_stay_bit_identical(as_function):
    def trainable(params):
        return {n: n != "w" for n in params}

    kwargs = dict(momentum=0.9, nesterov=True, weight_decay=0.01, mask=decay_mask_timm)
    flags = trainable if as_function else trainable(PARAMS)
    frozen, _ = _optax_run(make_optimizer("sgd", 0.05, trainable=flags, **kwargs))
    free, _ = _optax_run(make_optimizer("sgd", 0.05, **kwargs))
    np.testing.assert_array_equal(frozen["w"], PARAMS["w"])
    for n in ("b", "k"):
        assert not np.array_equal(frozen[n], PARAMS[n])
        np.testing.assert_array_equal(frozen[n], free[n])


class _Layer(nnx.Module):
    def __init__(self, n_in: int, n_out: int):
        self.kernel = nnx.Param(jnp.full((n_in, n_out), 0.5))
        self.bias = nnx.Param(jnp.full((n_out,), 0.5))


class _Net(nnx.Module):
    """Constant-initialised (no RNG, cheap to build) with a non-parameter variable, as BatchNorm models have."""

    def __init__(self):
        self.backbone = _Layer(3, 4)
        self.head = _Layer(4, 2)
        self.seen = nnx.BatchStat(jnp.zeros(()))


def _head_only(params):
    return jax.tree_util.tree_map_with_path(lambda path, _: jax.tree_util.keystr(path).startswith("['head']"), params)


def test_function_masks_on_nnx_optimizer():
    """nnx.Optimizer hands optax plain arrays; function masks see exactly that tree."""
    model = _Net()
    tx = make_optimizer(
        "adamw", 0.1, schedule="cosine", total_steps=4, weight_decay=0.1, mask=decay_mask_timm, trainable=_head_only
    )
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    grads = jax.tree.map(jnp.ones_like, nnx.state(model, nnx.Param))
    nnx.jit(lambda optimizer, model, grads: optimizer.update(model, grads))(optimizer, model, grads)
    assert float(current_learning_rate(optimizer.opt_state)) == pytest.approx(0.1)
    np.testing.assert_array_equal(model.backbone.kernel[...], 0.5)
    assert not np.any(model.head.kernel[...] == 0.5)


def test_pytree_masks_on_split_state():
    """Masks built from an nnx.split State (of nnx.Param variables) fit the State the optimizer sees."""
    _, params, _ = nnx.split(_Net(), nnx.Param, ...)
    grads = jax.tree.map(jnp.ones_like, params)

    def new_params(decay_mask, trainable):
        tx = make_optimizer("sgd", 0.1, momentum=0.9, weight_decay=0.1, mask=decay_mask, trainable=trainable)

        @jax.jit
        def step(params, grads):
            updates, _ = tx.update(grads, tx.init(params), params)
            return optax.apply_updates(params, updates)

        return step(params, grads)

    masked = new_params(decay_mask_timm(params), _head_only(params))
    undecayed = new_params(jax.tree.map(lambda _: False, params), _head_only(params))
    np.testing.assert_array_equal(masked["backbone"]["kernel"][...], 0.5)
    np.testing.assert_array_equal(masked["head"]["bias"][...], undecayed["head"]["bias"][...])
    assert not np.array_equal(masked["head"]["kernel"][...], undecayed["head"]["kernel"][...])


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        (("lamb", 0.1), {}, "unknown optimizer 'lamb'"),
        (("adam", 0.1), dict(schedule="step"), "unknown schedule 'step'"),
        (("adam", 0.1), dict(schedule="cosine"), "needs t_max or total_steps"),
        (("adam", -0.1), {}, "learning_rate must be >= 0"),
        (("adam", 0.1), dict(weight_decay=-1.0), "weight_decay must be >= 0"),
        (("adam", 0.1), dict(momentum=0.9), "adam takes no momentum"),
        (("sgd", 0.1), dict(nesterov=True), "nesterov=True needs"),
        (("rmsprop", 0.1), dict(momentum=0.9, nesterov=True), "nesterov=True needs"),
        (("sgd", 0.1), dict(schedule="cosine", total_steps=5, warmup_steps=5), "must exceed warmup_steps"),
        (("sgd", 0.1), dict(schedule="cosine-periodic", t_max=0), "t_max must be a positive int"),
        (("sgd", 0.1), dict(warmup_steps=-1), "warmup_steps must be an int >= 0"),
    ],
)
def test_invalid_arguments(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_optimizer(*args, **kwargs)


def test_current_learning_rate_rejects_foreign_state():
    with pytest.raises(ValueError, match="make_optimizer"):
        current_learning_rate(optax.adam(0.1).init(PARAMS))


def test_traced_trainable_flags_are_rejected():
    tx = make_optimizer("sgd", 0.1, trainable=lambda params: jax.tree.map(lambda p: p.sum() > 0, params))
    with pytest.raises(ValueError, match="known before tracing"):
        jax.jit(tx.init)(PARAMS)
