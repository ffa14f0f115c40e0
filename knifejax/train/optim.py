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

The optimizer is wrapped in `optax.inject_hyperparams`, so the rate is in the state:
`opt_state.hyperparams["learning_rate"]` (under `nnx.Optimizer`: `optimizer.opt_state.hyperparams[...]`);
read it with `current_learning_rate`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

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


def _cosine(base: float, eta_min: float, t_max: int, periodic: bool) -> optax.Schedule:
    """torch's CosineAnnealingLR closed form, `eta_min + (base - eta_min) * (1 + cos(pi * t / T_max)) / 2`.

    torch's chainable `get_lr` recursion follows this closed form past T_max too (the rate climbs back to
    `base` at 2 * T_max and cycles); `periodic=False` instead holds the rate at `eta_min` after T_max.
    The step is reduced modulo the 2 * T_max period in integers so float32 keeps full precision late in
    training.
    """

    def schedule(step: jax.Array) -> jax.Array:
        step = jnp.asarray(step, jnp.int32)
        step = jnp.mod(step, 2 * t_max) if periodic else jnp.minimum(step, t_max)
        phase = step.astype(jnp.float32) * jnp.float32(math.pi / t_max)
        return eta_min + (base - eta_min) * (1.0 + jnp.cos(phase)) / 2.0

    return schedule


def _with_warmup(main: optax.Schedule, base: float, warmup_steps: int) -> optax.Schedule:
    """Linear from 0 at step 0 to `base` at `warmup_steps`, then `main` restarted from its own step 0."""

    def schedule(step: jax.Array) -> jax.Array:
        step = jnp.asarray(step, jnp.int32)
        ramp = base * step.astype(jnp.float32) / warmup_steps
        return jnp.where(step < warmup_steps, ramp, main(jnp.maximum(step - warmup_steps, 0)))

    return schedule


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
    warmup_steps: linear warm-up from 0 to `learning_rate` (optax's `warmup_*_schedule` and timm's
        `warmup_prefix=True` convention), after which the schedule starts from its own step 0, so its
        T_max counts steps after warm-up. Step 0 therefore uses a rate of 0.
    """
    _require(learning_rate >= 0.0, f"learning_rate must be >= 0, got {learning_rate}")
    _require(eta_min >= 0.0, f"eta_min must be >= 0, got {eta_min}")
    _require(
        isinstance(warmup_steps, int) and warmup_steps >= 0, f"warmup_steps must be an int >= 0, got {warmup_steps!r}"
    )
    _require(schedule in SCHEDULES, f"unknown schedule {schedule!r}; known: {list(SCHEDULES)}")
    if schedule == "constant":
        main: optax.Schedule = optax.constant_schedule(learning_rate)
    else:
        if t_max is None:
            _require(total_steps is not None, f"schedule {schedule!r} needs t_max or total_steps")
            t_max = total_steps - warmup_steps
            _require(
                t_max > 0, f"total_steps ({total_steps}) must exceed warmup_steps ({warmup_steps}) for {schedule!r}"
            )
        _require(isinstance(t_max, int) and t_max > 0, f"t_max must be a positive int, got {t_max!r}")
        main = _cosine(learning_rate, eta_min, t_max, periodic=schedule == "cosine-periodic")
    return _with_warmup(main, learning_rate, warmup_steps) if warmup_steps else main


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


def _decay(weight_decay: float, mask: Mask | None) -> optax.GradientTransformation:
    return optax.add_decayed_weights(weight_decay, mask) if weight_decay else optax.identity()


def _momentum(momentum: float, nesterov: bool) -> optax.GradientTransformation:
    return optax.trace(decay=momentum, nesterov=nesterov) if momentum else optax.identity()


def _torch_rule(
    name: str,
    learning_rate: jax.Array,
    *,
    momentum: float,
    nesterov: bool,
    weight_decay: float,
    betas: tuple[float, float],
    eps: float,
    alpha: float,
    mask: Mask | None,
) -> optax.GradientTransformation:
    b1, b2 = betas
    if name == "adam":
        steps = [_decay(weight_decay, mask), optax.scale_by_adam(b1=b1, b2=b2, eps=eps)]
    elif name == "adamw":
        steps = [optax.scale_by_adam(b1=b1, b2=b2, eps=eps), _decay(weight_decay, mask)]
    elif name == "sgd":
        steps = [_decay(weight_decay, mask), _momentum(momentum, nesterov)]
    else:
        steps = [
            _decay(weight_decay, mask),
            optax.scale_by_rms(decay=alpha, eps=eps, eps_in_sqrt=False),
            _momentum(momentum, nesterov=False),
        ]
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
) -> optax.GradientTransformation:
    """A torch.optim optimizer (`adam`, `adamw`, `sgd` or `rmsprop`) with a torch LR schedule, as optax.

    Arguments follow torch's names and defaults (`alpha` and `momentum` are RMSprop's; SGD's dampening is 0,
    RMSprop is not centered). See `make_schedule` for `schedule`, `total_steps`, `t_max`, `eta_min` and
    `warmup_steps`.

    mask: which parameters get weight decay (True = decayed), as a pytree of bools shaped like the
        parameters or a function params -> such a pytree, e.g. `decay_mask_timm`. Default: all.
    trainable: which parameters are trained, in the same forms; the others receive exactly zero updates
        and keep no optimizer state. Default: all.

    The current rate is `opt_state.hyperparams["learning_rate"]` (see `current_learning_rate`).
    """
    _check_hyperparameters(
        name, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, betas=betas, eps=eps, alpha=alpha
    )
    rate = make_schedule(
        learning_rate, schedule, total_steps=total_steps, t_max=t_max, eta_min=eta_min, warmup_steps=warmup_steps
    )

    def build(learning_rate: jax.Array) -> optax.GradientTransformation:
        tx = _torch_rule(
            name,
            learning_rate,
            momentum=momentum,
            nesterov=nesterov,
            weight_decay=weight_decay,
            betas=betas,
            eps=eps,
            alpha=alpha,
            mask=mask,
        )
        return tx if trainable is None else _freeze(tx, trainable)

    return optax.inject_hyperparams(build)(learning_rate=rate)


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
