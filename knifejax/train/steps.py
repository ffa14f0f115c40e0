"""jit-compiled train and eval steps over one pytree of training state.

The model is split once into its static graph (`graphdef`) and arrays: trainable parameters, and the rest
(BatchNorm statistics, dropout RNG streams). Everything that changes during training — parameters, the
rest, optimizer state, step — lives in one `TrainState` pytree, so jit donation, sharding and checkpointing
treat it as a whole. A state may carry its recipe's numbers (`Hyperparameters`: the rate and its schedule,
momentum, weight decay, label smoothing) as arrays: the step then takes them from there, so one compiled step
serves every setting that differs only in them. The model is re-assembled inside the step with `nnx.merge(..., copy=True)`
(merging without a copy under `jax.grad` raises a trace-context error on BatchNorm).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from knifejax.metrics import ranking_metrics
from knifejax.train.optim import Hyperparameters
from knifejax.train.transfer import freeze_batchnorm

COMPUTE_DTYPES = {"fp32": jnp.float32, "bf16": jnp.bfloat16}


class TrainState(NamedTuple):
    params: nnx.State
    rest: nnx.State
    opt_state: optax.OptState
    step: jax.Array
    hyper: Hyperparameters | None = None  # the recipe's numbers, from its config (not checkpointed)


def init_state(
    model: nnx.Module,
    optimizer: optax.GradientTransformation,
    frozen_batchnorm: tuple[str, ...] = (),
    hyper: Hyperparameters | None = None,
) -> tuple[nnx.GraphDef, TrainState]:
    """Split `model` into its static graph and a fresh TrainState (the model is left in train mode).

    BatchNorm layers under the module paths `frozen_batchnorm` stay in eval mode in the train step. With `hyper`,
    the train step uses those numbers (the optimizer must be a `make_optimizer` one); without, the optimizer's own.
    """
    model.train()
    freeze_batchnorm(model, frozen_batchnorm)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    # Jitted: eagerly, the optimizer's zeros compiled a small program per parameter shape (Lite0 with Adam: 48, 1.2 s).
    opt_state = jax.jit(optimizer.init)(params)
    return graphdef, TrainState(params, rest, opt_state, jnp.zeros((), jnp.int32), hyper)


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float | jax.Array = 0.0) -> jax.Array:
    """Mean softmax cross-entropy in float32, with optional label smoothing (torch's definition)."""
    logits = logits.astype(jnp.float32)
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
    return optax.softmax_cross_entropy(logits, targets).mean()


def normalize_images(images: jax.Array, mean, std) -> jax.Array:
    """uint8 (B, H, W, 3) -> float32 `(x / 255 - mean) / std`, the same arithmetic as `kj.preprocess`."""
    x = images.astype(jnp.float32) / 255.0
    return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def _inputs(images: jax.Array, normalize: tuple | None, dtype) -> jax.Array:
    return (images if normalize is None else normalize_images(images, *normalize)).astype(dtype)


def _cast_floats(tree, dtype):
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def _train_step(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation, label_smoothing, normalize, precision):
    """The train step as a pure function `(state, images, labels) -> (state, metrics)`, not yet compiled."""
    dtype = COMPUTE_DTYPES[precision]

    def train_step(state: TrainState, images: jax.Array, labels: jax.Array):
        x = _inputs(images, normalize, dtype)
        smoothing = label_smoothing if state.hyper is None else state.hyper.label_smoothing
        numbers = {} if state.hyper is None else {"hyperparameters": state.hyper}

        def loss_fn(params):
            model = nnx.merge(graphdef, _cast_floats(params, dtype), state.rest, copy=True)
            logits = model(x)
            rest = jax.tree.map(lambda new, old: new.astype(old.dtype), nnx.state(model, nnx.Not(nnx.Param)), state.rest)
            return cross_entropy(logits, labels, smoothing), (logits, rest)

        (loss, (logits, rest)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params, **numbers)
        params = optax.apply_updates(state.params, updates)
        return TrainState(params, rest, opt_state, state.step + 1, state.hyper), {"loss": loss, **ranking_metrics(logits, labels)}

    return train_step


def make_train_step(
    graphdef: nnx.GraphDef,
    optimizer: optax.GradientTransformation,
    label_smoothing: float = 0.0,
    *,
    normalize: tuple | None = None,
    precision: str = "fp32",
):
    """A jit-compiled `(state, images, labels) -> (state, metrics)`; the input state's buffers are donated.

    label_smoothing: for states without `hyper`; a state with `hyper` brings its own (and its rate, momentum and
        weight decay, given to the optimizer as `hyperparameters=`).

    normalize: `(mean, std)` when images arrive as uint8 (normalised on the device), None for float input.
    precision: "bf16" runs the forward and backward passes in bfloat16 on a bf16 copy of the parameters;
        the float32 parameters stay the master copy the optimizer updates, and BatchNorm statistics and
        the loss stay float32.

    The same step runs on one device or many: shard the batch over a "data" mesh axis and replicate the
    state (`knifejax.train.sharding`); jit then splits the work and BatchNorm averages over the global batch.
    """
    return jax.jit(_train_step(graphdef, optimizer, label_smoothing, normalize, precision), donate_argnums=0)


def make_members_train_step(
    graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation, *, normalize: tuple | None = None,
    precision: str = "fp32",
):  # fmt: skip
    """Members side by side: a jit-compiled `(states, images, labels, active) -> (states, metrics)` where every
    array of `states` (each with its `hyper`) and of the metrics has a leading member axis, and all members
    train on the same batch under `jax.vmap`. A member whose `active` flag is False keeps its state unchanged
    (a member that diverged stops while the others go on). The input states' buffers are donated.
    """
    step = jax.vmap(_train_step(graphdef, optimizer, 0.0, normalize, precision), in_axes=(0, None, None))

    @partial(jax.jit, donate_argnums=0)
    def members_step(states: TrainState, images: jax.Array, labels: jax.Array, active: jax.Array):
        stepped, metrics = step(states, images, labels)

        def keep_inactive(new: jax.Array, old: jax.Array) -> jax.Array:
            return jax.lax.select(jnp.broadcast_to(active.reshape(active.shape + (1,) * (new.ndim - 1)), new.shape), new, old)

        return jax.tree.map(keep_inactive, stepped, states), metrics

    return members_step


def make_eval_step(graphdef: nnx.GraphDef, *, normalize: tuple | None = None, precision: str = "fp32"):
    """A jit-compiled `(state, images) -> float32 logits` in eval mode (running statistics). Metrics are taken
    over a whole evaluation set, not per batch: `knifejax.predict.predict` gathers the logits and
    `knifejax.metrics.evaluation_metrics` scores them."""
    dtype = COMPUTE_DTYPES[precision]

    @jax.jit
    def eval_step(state: TrainState, images: jax.Array) -> jax.Array:
        model = nnx.merge(graphdef, _cast_floats(state.params, dtype), state.rest, copy=True)
        model.eval()
        return model(_inputs(images, normalize, dtype)).astype(jnp.float32)

    return eval_step


def to_model(graphdef: nnx.GraphDef, state: TrainState) -> nnx.Module:
    """The trained model as an nnx.Module (a copy; the state stays usable)."""
    return nnx.merge(graphdef, state.params, state.rest, copy=True)

