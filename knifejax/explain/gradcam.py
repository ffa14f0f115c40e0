"""Grad-CAM with `jax.grad`, computing what pytorch-grad-cam's `GradCAM` computes.

For each image: the target is the raw logit of the target class (the argmax when none is given); the weights are
the gradients of that logit with respect to the activation at `layer`, averaged over the spatial positions; the map
is the ReLU of the weighted sum of the activation's channels, min-max scaled to [0, 1] (`c - c.min()`, then
`/ (1e-7 + c.max())`), resized bilinearly (half-pixel centres, as cv2.resize) to the input size, and min-max scaled
again. The model runs in eval mode.

No hooks: the module at `layer` is wrapped, on a copy of the model made inside the jitted function, by a module
that adds a zero "probe" to its output. The gradient of the target with respect to the probe is the gradient with
respect to the activation. The caller's model is neither mutated nor switched out of its mode.

Layers are timm module paths ("layer4", "layer3.1", "blocks.5", "bn2", "blocks.11.norm1"); a path naming a list
of modules (timm's nn.Sequential) means its last module's output, as in timm. Token activations (B, T, D) of a
ViT are turned into a (B, h, w, D) map by dropping the class token(s) and reshaping to the patch grid, as
pytorch-grad-cam's documented ViT `reshape_transform`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from knifejax.errors import ConfigError

Array = jax.Array


class _Probe(nnx.Module):
    """Stands in for the module at the Grad-CAM layer: its output plus `probe(...)`."""

    def __init__(self, inner: nnx.Module, probe: Callable[[Array], Array]):
        self.inner = inner
        self.probe = probe

    def __call__(self, *args, **kwargs):
        return self.probe(self.inner(*args, **kwargs))


def _locate(model: nnx.Module, layer: str) -> tuple[object, str | int]:
    """(parent, key) of the module at `layer`; a list resolves to its last element."""
    parent, key, node = None, None, model
    walked = []
    for part in layer.split("."):
        if isinstance(node, nnx.List):
            if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
                raise ConfigError(f"Grad-CAM layer {layer!r}: {'.'.join(walked)} has {len(node)} entries, not {part!r}")
            parent, key = node, int(part) % len(node)
            node = node[key]
        else:
            child = getattr(node, part, None)
            if not isinstance(child, (nnx.Module, nnx.List)):
                children = sorted(k for k, v in vars(node).items() if isinstance(v, (nnx.Module, nnx.List)))
                where = ".".join(walked) or type(model).__name__
                raise ConfigError(f"Grad-CAM layer {layer!r}: {where} has no module {part!r}; it has {children}")
            parent, key, node = node, part, child
        walked.append(part)
    while isinstance(node, nnx.List):
        parent, key, node = node, len(node) - 1, node[-1]
    return parent, key


def _replace(parent, key, module) -> None:
    if isinstance(parent, nnx.List):
        parent[key] = module
    else:
        setattr(parent, key, module)


def tokens_to_map(model: nnx.Module, activation: Array) -> Array:
    """A layer's activation as a (B, h, w, C) map: CNN maps pass through; ViT tokens (B, T, D) lose their prefix
    (class) tokens and are reshaped to the model's patch grid."""
    if activation.ndim == 4:
        return activation
    if activation.ndim == 3:
        h, w = model.patch_embed.grid_size
        return activation[:, model.num_prefix_tokens :].reshape(activation.shape[0], h, w, activation.shape[-1])
    raise ValueError(f"Grad-CAM needs a (B, h, w, C) or (B, tokens, D) activation, got shape {activation.shape}")


def _min_max(maps: Array) -> Array:
    """pytorch-grad-cam's per-image scaling: subtract the minimum, divide by 1e-7 + the new maximum."""
    maps = maps - maps.min(axis=(1, 2), keepdims=True)
    return maps / (1e-7 + maps.max(axis=(1, 2), keepdims=True))


def _get(parent, key):
    return parent[key] if isinstance(parent, nnx.List) else getattr(parent, key)


def _probed_forward(graphdef, state, x: Array, layer: str, delta: Array | None) -> tuple[Array, Array]:
    """(logits, activation at `layer`) of an eval-mode copy of the model whose `layer` output gets `+ delta`."""
    model = nnx.merge(graphdef, state)
    model.eval()
    parent, key = _locate(model, layer)
    seen = []

    def probe(activation):
        seen.append(activation)
        return activation if delta is None else activation + delta

    _replace(parent, key, _Probe(_get(parent, key), probe))
    return model(x), seen[0]


@partial(nnx.jit, static_argnames=("layer",))
def _grad_cam_jit(
    model: nnx.Module, x: Array, targets: Array, use_argmax: Array, layer: str
) -> tuple[Array, Array, Array]:
    graphdef, state = nnx.split(model)

    def target_logit(delta):
        logits, activation = _probed_forward(graphdef, state, x, layer, delta)
        chosen = jnp.where(use_argmax, jnp.argmax(logits, axis=-1), targets)
        return jnp.take_along_axis(logits, chosen[:, None], axis=-1).sum(), (activation, chosen, logits)

    shape = jax.eval_shape(lambda: _probed_forward(graphdef, state, x, layer, None)[1])
    grads, (activation, chosen, logits) = jax.grad(target_logit, has_aux=True)(jnp.zeros(shape.shape, shape.dtype))
    activation = tokens_to_map(model, activation).astype(jnp.float32)
    grads = tokens_to_map(model, grads).astype(jnp.float32)
    weights = grads.mean(axis=(1, 2))
    cam = _min_max(jax.nn.relu(jnp.einsum("bhwc,bc->bhw", activation, weights)))
    cam = jax.image.resize(cam, (cam.shape[0], *x.shape[1:3]), method="linear")
    return _min_max(cam), chosen, jax.nn.softmax(logits.astype(jnp.float32), axis=-1)


def grad_cam(model: nnx.Module, x, targets=None, layer: str | None = None) -> Array:
    """Grad-CAM maps (B, H, W) float32 in [0, 1] for a normalised NHWC batch `x`.

    targets: None for each image's predicted class, else an int array (B,) of classes.
    layer: a timm module path; default `model.grad_cam_layer` (ResNet/SKResNet `layer4`, EfficientNet `bn2`,
        MobileNetV3 `blocks`, ViT `blocks.<last>.norm1`).
    """
    maps, _, _ = grad_cam_and_scores(model, x, targets, layer)
    return maps


def grad_cam_and_scores(model: nnx.Module, x, targets=None, layer: str | None = None) -> tuple[Array, Array, Array]:
    """`grad_cam`, also returning the class each map explains (the argmax where `targets` is None) and the
    model's class probabilities (B, num_classes), from the same forward pass."""
    x = jnp.asarray(x, jnp.float32)
    if x.ndim != 4:
        raise ValueError(f"grad_cam takes a (B, H, W, C) batch, got shape {x.shape}")
    layer = layer or model.grad_cam_layer
    _locate(model, layer)  # a wrong path fails here, with the module's children named
    batch = x.shape[0]
    use_argmax = targets is None
    targets = np.zeros(batch, np.int32) if use_argmax else np.asarray(targets, np.int32).reshape(-1)
    if targets.shape != (batch,):
        raise ValueError(f"targets must hold one class per image ({batch}), got {targets.shape[0]}")
    num_classes = getattr(model, "num_classes", None)
    if not use_argmax and num_classes and (targets.min() < 0 or targets.max() >= num_classes):
        raise ValueError(f"targets must be classes in 0..{num_classes - 1}, got {targets.tolist()}")
    return _grad_cam_jit(model, x, jnp.asarray(targets), jnp.asarray(use_argmax), layer)
