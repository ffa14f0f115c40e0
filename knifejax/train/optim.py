"""Optimizers and learning-rate schedules with PyTorch's exact semantics, built from optax pieces.

The study trained with `torch.optim` and `CosineAnnealingLR` stepped every iteration; optax's stock
aliases differ from those in small ways that change trajectories:

- `optax.rmsprop` puts eps inside the square root by default and applies the learning rate before the
  momentum buffer; torch adds eps after the square root and multiplies the buffer by the current rate.
- `optax.adam`/`optax.sgd` take no coupled L2 term; torch's Adam, SGD and RMSprop add `weight_decay * param`
  to the gradient before any moment, while AdamW decays decoupled, `param -= lr_t * weight_decay * param`.

Equivalences relied on (checked against torch 2.13's `_single_tensor_*` code and by tests/test_optim.py):
Adam's `denom = sqrt(v) / sqrt(1 - b2^t) + eps` is optax's `sqrt(v_hat) + eps` (eps outside the root,
`eps_root=0`); torch's SGD momentum buffer starts as the first gradient, which is `optax.trace` from zeros
when dampening is 0, and its Nesterov step `g + m * buf` is `optax.trace(nesterov=True)`.

The numbers of a recipe that leave the program unchanged (the rate, its schedule's period, floor and warm-up,
momentum, weight decay, label smoothing) are `Hyperparameters`, a pytree of arrays. `make_optimizer` binds its own
numbers, and a train step may pass others as `update(..., hyperparameters=h)`: traced, they make every setting of a
sweep one compiled program, and stacked on a leading axis they train side by side under `jax.vmap`. The schedule
is one formula for all three kinds, with the kind as numbers; derived constants (`cosine_span`,
`phase_per_step`) are taken in float64 on the host, as Python constants were. (A program with the numbers as
inputs and one with them as constants can still differ by a float32 rounding: XLA folds and contracts constants
into multiply-adds differently.) Which transformations exist (momentum buffer or not, weight decay or not) and Adam's and RMSprop's betas,
eps and alpha stay part of the program.

The state has the layout of `optax.inject_hyperparams`: the rate of the latest update is
`opt_state.hyperparams["learning_rate"]` (under `nnx.Optimizer`: `optimizer.opt_state.hyperparams[...]`); read it
with `current_learning_rate`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

PyTree = Any
Mask = PyTree | Callable[[PyTree], PyTree]

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("constant", "cosine", "cosine-periodic")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


class Hyperparameters(NamedTuple):
    """A recipe's numbers as arrays: the inputs of one compiled train step (see the module docstring).

    Build with `hyperparameters`; stack several with `jax.tree.map(jnp.stack, ...)` for members side by side.
    """

    learning_rate: jax.Array  # float32, the base rate
    eta_min: jax.Array  # float32, the cosine floor
    cosine_span: jax.Array  # float32(learning_rate - eta_min), the difference taken in float64
    phase_per_step: jax.Array  # float32(pi / t_max)
    t_max: jax.Array  # int32, the cosine period in steps after warm-up
    warmup_steps: jax.Array  # int32
    periodic: jax.Array  # bool: the cosine continues past t_max as torch computes it
    constant: jax.Array  # bool: the rate stays at learning_rate
    momentum: jax.Array  # float32 (used where the optimizer has a momentum buffer)
    weight_decay: jax.Array  # float32 (used where the optimizer decays weights)
    label_smoothing: jax.Array  # float32 (used by the train step's loss)


def hyperparameters(
    learning_rate: float,
    schedule: str = "constant",
    *,
    total_steps: int | None = None,
    t_max: int | None = None,
    eta_min: float = 0.0,
    warmup_steps: int = 0,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    label_smoothing: float = 0.0,
) -> Hyperparameters:
    """A recipe's numbers as `Hyperparameters`; the schedule arguments as `make_schedule` takes them."""
    _require(learning_rate >= 0.0, f"learning_rate must be >= 0, got {learning_rate}")
    _require(eta_min >= 0.0, f"eta_min must be >= 0, got {eta_min}")
    _require(
        isinstance(warmup_steps, int) and warmup_steps >= 0, f"warmup_steps must be an int >= 0, got {warmup_steps!r}"
    )
    _require(schedule in SCHEDULES, f"unknown schedule {schedule!r}; known: {list(SCHEDULES)}")
    if schedule == "constant":
        t_max, eta_min = 1, learning_rate
    elif t_max is None:
        _require(total_steps is not None, f"schedule {schedule!r} needs t_max or total_steps")
        t_max = total_steps - warmup_steps
        _require(t_max > 0, f"total_steps ({total_steps}) must exceed warmup_steps ({warmup_steps}) for {schedule!r}")
    _require(isinstance(t_max, int) and t_max > 0, f"t_max must be a positive int, got {t_max!r}")
    f32 = partial(jnp.asarray, dtype=jnp.float32)
    return Hyperparameters(
        learning_rate=f32(learning_rate),
        eta_min=f32(eta_min),
        cosine_span=f32(learning_rate - eta_min),
        phase_per_step=f32(math.pi / t_max),
        t_max=jnp.asarray(t_max, jnp.int32),
        warmup_steps=jnp.asarray(warmup_steps, jnp.int32),
        periodic=jnp.asarray(schedule == "cosine-periodic"),
        constant=jnp.asarray(schedule == "constant"),
        momentum=f32(momentum),
        weight_decay=f32(weight_decay),
        label_smoothing=f32(label_smoothing),
    )


@jax.jit  # one program, not a dozen compiled op by op where it runs outside a step (a `make_schedule` called eagerly)
def scheduled_rate(step: jax.Array, h: Hyperparameters) -> jax.Array:
    """The rate at optimizer step `step` (0 for the first update), torch-equal.

    Warm-up: linear from 0 at step 0 to the base rate at `warmup_steps` (optax's `warmup_*_schedule` and timm's
    `warmup_prefix=True` convention), after which the main schedule starts from its own step 0. Cosine: torch's
    CosineAnnealingLR closed form, `eta_min + (base - eta_min) * (1 + cos(pi * t / T_max)) / 2`; torch's
    chainable recursion follows it past T_max too (back at `base` at 2 * T_max), which `periodic` keeps, where
    otherwise the rate holds at `eta_min`. The step is reduced in integers so float32 keeps full precision late
    in training.
    """
    step = jnp.asarray(step, jnp.int32)
    after = jnp.maximum(step - h.warmup_steps, 0)
    cycle = jnp.where(h.periodic, jnp.mod(after, 2 * h.t_max), jnp.minimum(after, h.t_max))
    cosine = h.eta_min + h.cosine_span * (1.0 + jnp.cos(cycle.astype(jnp.float32) * h.phase_per_step)) / 2.0
    main = jnp.where(h.constant, h.learning_rate, cosine)
    ramp = h.learning_rate * step.astype(jnp.float32) / jnp.maximum(h.warmup_steps, 1).astype(jnp.float32)
    return jnp.where(step < h.warmup_steps, ramp, main)


def make_schedule(
    learning_rate: float,
    schedule: str = "constant",
    *,
    total_steps: int | None = None,
    t_max: int | None = None,
    eta_min: float = 0.0,
    warmup_steps: int = 0,
) -> optax.Schedule:
    """The learning rate as a function of the optimizer step (0 for the first update), torch-equal.

    schedule: 'constant'; 'cosine', torch's CosineAnnealingLR stepped every iteration with T_max = `t_max`
        or else `total_steps - warmup_steps`, held at `eta_min` after T_max (where torch would climb back);
        'cosine-periodic', the same formula continued past T_max exactly as torch computes it (the rate is
        back at its base every 2 * T_max steps).
    warmup_steps: linear warm-up from 0 to `learning_rate`, after which the schedule starts from its own step 0,
        so its T_max counts steps after warm-up. Step 0 therefore uses a rate of 0.
    """
    h = hyperparameters(
        learning_rate, schedule, total_steps=total_steps, t_max=t_max, eta_min=eta_min, warmup_steps=warmup_steps
    )
    return partial(scheduled_rate, h=h)


def tree_path_name(path: tuple[Any, ...]) -> str:
    """A pytree path as a dotted module path (`blocks.0.attn.qkv.weight`), the way timm names parameters; the
    attribute keys of `nnx.Variable` leaves (`.value`) are not part of the name."""
    parts = []
    for key in path:
        if isinstance(key, jax.tree_util.DictKey):
            parts.append(str(key.key))
        elif isinstance(key, jax.tree_util.SequenceKey):
            parts.append(str(key.idx))
    return ".".join(parts)


def decay_mask_timm(params: PyTree, no_weight_decay: frozenset[str] | set[str] = frozenset()) -> PyTree:
    """timm's default weight-decay mask: decay (True) only arrays with ndim > 1, not biases or norm affine terms,
    nor the parameters named in `no_weight_decay` (timm's `model.no_weight_decay()`, e.g. a ViT's `pos_embed` and
    `cls_token`; `functools.partial(decay_mask_timm, no_weight_decay=...)` makes the function form).

    Works on any pytree of arrays, including an `nnx.State`; the result has the structure of its input.
    Prefer passing the function itself, `mask=decay_mask_timm`: optax then applies it to exactly the tree it
    is given. A precomputed mask must match that tree, and `nnx.Optimizer` initialises with a State of
    `nnx.Param`s but updates with plain arrays, so only the function form works there.
    """
    return jax.tree_util.tree_map_with_path(
        lambda path, x: jnp.ndim(x) > 1 and tree_path_name(path) not in no_weight_decay, params
    )


def _torch_rule(
    name: str,
    learning_rate: jax.Array,
    h: Hyperparameters,
    *,
    momentum: bool,
    nesterov: bool,
    weight_decay: bool,
    betas: tuple[float, float],
    eps: float,
    alpha: float,
    mask: Mask | None,
) -> optax.GradientTransformation:
    """torch's update rule `name` at rate `learning_rate`; `momentum` and `weight_decay` say whether the momentum
    buffer and the decay term exist, their values come from `h`."""
    decay = optax.add_decayed_weights(h.weight_decay, mask) if weight_decay else optax.identity()
    b1, b2 = betas
    if name == "adam":
        steps = [decay, optax.scale_by_adam(b1=b1, b2=b2, eps=eps)]
    elif name == "adamw":
        steps = [optax.scale_by_adam(b1=b1, b2=b2, eps=eps), decay]
    else:
        buffer = optax.trace(decay=h.momentum, nesterov=nesterov) if momentum else optax.identity()
        scale = [] if name == "sgd" else [optax.scale_by_rms(decay=alpha, eps=eps, eps_in_sqrt=False)]
        steps = [decay, *scale, buffer]
    return optax.chain(*steps, optax.scale_by_learning_rate(learning_rate))


def _freeze(tx: optax.GradientTransformation, trainable: Mask) -> optax.GradientTransformation:
    """Route frozen leaves to `set_to_zero`: exactly zero updates, and no optimizer state kept for them."""

    def label(flag: Any) -> str:
        if isinstance(flag, jax.core.Tracer):
            raise ValueError("trainable flags must be Python or NumPy bools known before tracing, not traced arrays")
        return "trainable" if flag else "frozen"

    def labels(params: PyTree) -> PyTree:
        return jax.tree.map(label, trainable(params) if callable(trainable) else trainable)

    return optax.multi_transform({"trainable": tx, "frozen": optax.set_to_zero()}, labels)


def _check_hyperparameters(
    name: str,
    *,
    momentum: float,
    nesterov: bool,
    weight_decay: float,
    betas: tuple[float, float],
    eps: float,
    alpha: float,
) -> None:
    _require(name in OPTIMIZERS, f"unknown optimizer {name!r}; known: {list(OPTIMIZERS)}")
    _require(weight_decay >= 0.0, f"weight_decay must be >= 0, got {weight_decay}")
    _require(eps >= 0.0, f"eps must be >= 0, got {eps}")
    _require(momentum >= 0.0, f"momentum must be >= 0, got {momentum}")
    _require(
        momentum == 0.0 or name in ("sgd", "rmsprop"),
        f"{name} takes no momentum argument (set betas instead); got momentum={momentum}",
    )
    _require(
        not nesterov or (name == "sgd" and momentum > 0.0),
        "nesterov=True needs name='sgd' and momentum > 0 (as torch.optim.SGD requires)",
    )
    _require(all(0.0 <= b < 1.0 for b in betas), f"betas must be in [0, 1), got {betas}")
    _require(alpha >= 0.0, f"alpha must be >= 0, got {alpha}")


def make_optimizer(
    name: str,
    learning_rate: float,
    *,
    schedule: str = "constant",
    total_steps: int | None = None,
    t_max: int | None = None,
    eta_min: float = 0.0,
    warmup_steps: int = 0,
    momentum: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    alpha: float = 0.99,
    mask: Mask | None = None,
    trainable: Mask | None = None,
) -> optax.GradientTransformationExtraArgs:
    """A torch.optim optimizer (`adam`, `adamw`, `sgd` or `rmsprop`) with a torch LR schedule, as optax.

    Arguments follow torch's names and defaults (`alpha` and `momentum` are RMSprop's; SGD's dampening is 0,
    RMSprop is not centered). See `make_schedule` for `schedule`, `total_steps`, `t_max`, `eta_min` and
    `warmup_steps`.

    mask: which parameters get weight decay (True = decayed), as a pytree of bools shaped like the
        parameters or a function params -> such a pytree, e.g. `decay_mask_timm`. Default: all.
    trainable: which parameters are trained, in the same forms; the others receive exactly zero updates
        and keep no optimizer state. Default: all.

    `update(grads, state, params, hyperparameters=h)` uses the numbers `h` (`Hyperparameters`, possibly traced)
    instead of this call's: the rate and its schedule, momentum, weight decay. A momentum buffer exists when
    `momentum > 0` here, the decay term when `weight_decay > 0`; an `h` with zeros there adds exact zeros. The current rate is `opt_state.hyperparams["learning_rate"]` (see
    `current_learning_rate`).
    """
    _check_hyperparameters(
        name, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, betas=betas, eps=eps, alpha=alpha
    )
    own = hyperparameters(
        learning_rate, schedule, total_steps=total_steps, t_max=t_max, eta_min=eta_min, warmup_steps=warmup_steps,
        momentum=momentum, weight_decay=weight_decay,
    )  # fmt: skip
    counter = optax.schedules.WrappedSchedule(partial(scheduled_rate, h=own))

    def rule(rate: jax.Array, h: Hyperparameters) -> optax.GradientTransformation:
        tx = _torch_rule(
            name, rate, h, momentum=momentum > 0, nesterov=nesterov, weight_decay=weight_decay > 0, betas=betas,
            eps=eps, alpha=alpha, mask=mask,
        )  # fmt: skip
        return tx if trainable is None else _freeze(tx, trainable)

    def init(params: PyTree) -> optax.InjectStatefulHyperparamsState:
        schedule_state = counter.init()
        rate = counter(schedule_state)
        return optax.InjectStatefulHyperparamsState(
            count=jnp.zeros([], jnp.int32),
            hyperparams={"learning_rate": rate},
            hyperparams_states={"learning_rate": schedule_state},
            inner_state=rule(rate, own).init(params),
        )

    def update(grads, state, params=None, *, hyperparameters: Hyperparameters | None = None, **extra_args):
        h = own if hyperparameters is None else hyperparameters
        schedule_state = state.hyperparams_states["learning_rate"]
        rate = scheduled_rate(schedule_state.count, h)
        updates, inner_state = rule(rate, h).update(grads, state.inner_state, params)
        return updates, optax.InjectStatefulHyperparamsState(
            count=optax.safe_increment(state.count),
            hyperparams={"learning_rate": rate},
            hyperparams_states={"learning_rate": counter.update(schedule_state)},
            inner_state=inner_state,
        )

    return optax.GradientTransformationExtraArgs(init, update)


def current_learning_rate(opt_state: PyTree) -> jax.Array:
    """The rate of the latest update (before the first update: the rate it will use), a float scalar.

    opt_state: the state of a `make_optimizer` optimizer, bare or as `nnx.Optimizer.opt_state`. After update
    n (0-based) this is the schedule at step n, i.e. what torch's `scheduler.get_last_lr()` returns between
    `optimizer.step()` and `scheduler.step()`.
    """
    try:
        rate = opt_state.hyperparams["learning_rate"]
    except (AttributeError, KeyError, TypeError):
        raise ValueError(
            f"{type(opt_state).__name__} holds no hyperparams['learning_rate']; pass the state of an optimizer "
            "built by make_optimizer (not an inner or partial state)"
        ) from None
    return jnp.asarray(rate[...] if isinstance(rate, nnx.Variable) else rate)
