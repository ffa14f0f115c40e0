"""The stacked head: a shallow network over the members' concatenated penultimate features.

Pure functions over one pytree, `{"mean", "std", "layers": [{"kernel", "bias"}, ...]}`: the features are
standardised with the fitting split's mean and std, then `depth` hidden layers (Linear, ReLU) and a Linear
classifier; dropout acts before every Linear layer while fitting. `depth=0` is multinomial logistic
regression. Fitting is one jit-compiled loop (`lax.scan` over epochs and minibatches) of AdamW with
decoupled weight decay on the kernels only.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax

from knifejax.errors import ConfigError

Params = dict  # {"mean": (D,), "std": (D,), "layers": [{"kernel": (in, out), "bias": (out,)}, ...]}


@dataclass(frozen=True)
class StackerConfig:
    """Hyper-parameters of the stacked head. The defaults suit a fitting split of a few images per class:
    logistic regression with input dropout (`depth=1` is the study's shallow network; on held-out fitting
    splits that small it overfits, see docs/ensembles.md)."""

    hidden: int = 256  # width of each hidden layer (depth >= 1)
    depth: int = 0  # hidden layers; 0: logistic regression on the features
    dropout: float = 0.5  # before every Linear layer, input included
    weight_decay: float = 1e-2  # AdamW's decoupled decay of the kernels
    epochs: int = 300
    lr: float = 1e-3
    batch_size: int | None = None  # None: full batch (the fitting split is small)
    seed: int = 0
    standardize: bool = True  # features to zero mean, unit variance over the fitting split

    def __post_init__(self):
        if self.depth < 0 or self.hidden < 1 or self.epochs < 1 or self.lr <= 0 or self.weight_decay < 0:
            raise ConfigError(f"invalid stacker configuration {self}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1 or None, got {self.batch_size}")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, values: dict) -> StackerConfig:
        return cls(**values)


def init_stacker(key: jax.Array, input_dim: int, num_classes: int, cfg: StackerConfig) -> Params:
    """Fresh parameters: He-normal hidden kernels, a zero classifier (uniform predictions), identity scaling."""
    dims = [input_dim] + [cfg.hidden] * cfg.depth + [num_classes]
    he = jax.nn.initializers.he_normal()
    layers = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        last = i == len(dims) - 2
        kernel = jnp.zeros((d_in, d_out)) if last else he(jax.random.fold_in(key, i), (d_in, d_out), jnp.float32)
        layers.append({"kernel": kernel, "bias": jnp.zeros((d_out,))})
    return {"mean": jnp.zeros((input_dim,)), "std": jnp.ones((input_dim,)), "layers": layers}


def stacker_logits(
    params: Params, features: jax.Array, *, dropout: float = 0.0, key: jax.Array | None = None
) -> jax.Array:
    """(N, D) features -> (N, C) logits; dropout only when `key` is given (fitting)."""
    x = (jnp.asarray(features, jnp.float32) - params["mean"]) / params["std"]
    layers = params["layers"]
    for i, layer in enumerate(layers):
        if key is not None and dropout > 0:
            keep = jax.random.bernoulli(jax.random.fold_in(key, i), 1.0 - dropout, x.shape)
            x = jnp.where(keep, x / (1.0 - dropout), 0.0)
        x = x @ layer["kernel"] + layer["bias"]
        if i < len(layers) - 1:
            x = jax.nn.relu(x)
    return x


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std per feature; constant features (std < 1e-6, e.g. dead ReLUs) keep std 1."""
    mean = features.mean(axis=0)
    std = features.std(axis=0)
    return mean.astype(np.float32), np.where(std < 1e-6, 1.0, std).astype(np.float32)


def _optimizer(cfg: StackerConfig) -> optax.GradientTransformation:
    decay = lambda layers: [{"kernel": True, "bias": False} for _ in layers]  # noqa: E731
    return optax.adamw(cfg.lr, weight_decay=cfg.weight_decay, mask=decay)


def fit_stacker(features: np.ndarray, labels: np.ndarray, num_classes: int, cfg: StackerConfig = StackerConfig()
                ) -> tuple[Params, np.ndarray]:  # fmt: skip
    """Fit the head on (N, D) features and their labels; returns (params, mean training loss per epoch)."""
    features = np.asarray(features, np.float32)
    labels = np.asarray(labels, np.int32)
    n = len(labels)
    if n == 0 or features.shape[0] != n:
        raise ValueError(f"{features.shape[0]} feature rows for {n} labels; need at least one labelled image")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must be in 0..{num_classes - 1} to fit the stacked head")
    key = jax.random.key(cfg.seed)
    params = init_stacker(jax.random.fold_in(key, 0), features.shape[1], num_classes, cfg)
    if cfg.standardize:
        mean, std = feature_statistics(features)
        params = dict(params, mean=jnp.asarray(mean), std=jnp.asarray(std))
    batch = n if cfg.batch_size is None else min(cfg.batch_size, n)
    layers, losses = _fit(params["layers"], params["mean"], params["std"], jnp.asarray(features), jnp.asarray(labels),
                          jax.random.fold_in(key, 1), cfg, batch)  # fmt: skip
    return dict(params, layers=layers), np.asarray(losses)


@functools.partial(jax.jit, static_argnames=("cfg", "batch"))
def _fit(layers, mean, std, features, labels, key, cfg: StackerConfig, batch: int):
    optimizer = _optimizer(cfg)
    n = labels.shape[0]
    steps = n // batch

    def loss_fn(layers, x, y, step_key):
        logits = stacker_logits({"mean": mean, "std": std, "layers": layers}, x, dropout=cfg.dropout, key=step_key)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def step(carry, inputs):
        layers, opt_state = carry
        rows, step_key = inputs
        loss, grads = jax.value_and_grad(loss_fn)(layers, features[rows], labels[rows], step_key)
        updates, opt_state = optimizer.update(grads, opt_state, layers)
        return (optax.apply_updates(layers, updates), opt_state), loss

    def epoch(carry, epoch_key):
        order_key, dropout_key = jax.random.split(epoch_key)
        order = jax.random.permutation(order_key, n) if batch < n else jnp.arange(n)
        rows = order[: steps * batch].reshape(steps, batch)
        carry, losses = jax.lax.scan(step, carry, (rows, jax.random.split(dropout_key, steps)))
        return carry, losses.mean()

    (layers, _), losses = jax.lax.scan(epoch, (layers, optimizer.init(layers)), jax.random.split(key, cfg.epochs))
    return layers, losses
