"""Train mode is the same function as timm's: the loss, the gradient of every parameter, and the
BatchNorm running statistics after the step (torch momentum 0.1, unbiased running variance).

Both sides run in float64. In float32, batch-statistic BatchNorm makes random deep nets ill-conditioned
(timm's own float32 gradients are up to ~10% off its float64 ones on ResNet-50 at 64 px), which would hide
a wrong convention behind a loose tolerance. In float64 both sides are exact to ~1e-12, so a per-tensor
tolerance of 1e-6 of the tensor's largest |gradient| catches any difference in the math; the 1e-9 floor
(of the model's largest gradient) covers gradients that are exactly zero in exact arithmetic, such as a
bias followed by a train-mode BatchNorm.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch.nn.functional as F
from flax import nnx

from knifejax.weights import timm_slots
from tests.reference import nchw, reference_pair
from tests.parity.comparison import FEWER_BLOCKS, TWO_BLOCKS, relative_error, size_kwargs

pytestmark = pytest.mark.slow  # float64 gradients of six networks against torch, the largest file

GRAD_TOLERANCE = 1e-6
STAT_TOLERANCE = 1e-9

# One model per distinct piece of math: basic and bottleneck blocks, squeeze-excite + SiLU, TensorFlow padding with
# MobileNetV3's hard-swish / hard-sigmoid and efficient head, selective kernels, and attention with LayerNorm.
# (EfficientNet-Lite0 adds none: its blocks are EfficientNet-B0's without squeeze-excite, which MobileNetV3 has too,
# with TensorFlow padding as `tf_mobilenetv3_small_100` and ReLU6; its forward pass is in test_forward, and it
# fine-tunes in test_train_end_to_end.)
NAMES = ["resnet18", "resnet50", "efficientnet_b0", "tf_mobilenetv3_small_100", "skresnet18", "vit_tiny_patch16_224"]
SHALLOW = {"vit_tiny_patch16_224": TWO_BLOCKS, "resnet50": FEWER_BLOCKS, "skresnet18": FEWER_BLOCKS}


@pytest.mark.parametrize("name", NAMES)
def test_train_step_gradients_and_statistics_equal_timm(timm, name):
    reference, model = reference_pair(timm, name, num_classes=10, **size_kwargs(name, 64, 64), **SHALLOW.get(name, {}))
    reference.double().train()
    model.train()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 64, 64, 3))
    labels = rng.integers(0, 10, size=4)

    t_loss = F.cross_entropy(reference(nchw(x)), torch.from_numpy(labels))
    t_loss.backward()

    def loss_fn(m):
        return optax.softmax_cross_entropy_with_integer_labels(m(jnp.asarray(x)), labels).mean()

    with jax.enable_x64(True):
        state = nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))
        # Cast on the host and placed as it is: an eager cast, or `jnp.asarray`, compiles a program per parameter shape.
        nnx.update(model, jax.tree.map(lambda a: jax.device_put(np.asarray(a, np.float64)), state))
        loss, grads = nnx.jit(nnx.value_and_grad(loss_fn))(model)
        ours = {".".join(map(str, path)): np.asarray(v[...]) for path, v in nnx.to_flat_state(grads)}
        slots = timm_slots(model)
        stats = {k: np.asarray(s.variable[...]) for k, s in slots.items() if "running" in k}

    assert all(g.dtype == np.float64 for g in ours.values())
    assert abs(float(loss) - t_loss.item()) <= 1e-9
    torch_grads = {k: p.grad.numpy() for k, p in reference.named_parameters()}
    assert set(ours) == set(torch_grads)
    model_scale = max(np.abs(g).max() for g in torch_grads.values())
    failures = []
    for key, expected in torch_grads.items():
        layout = slots[key].layout
        g = ours[key].transpose(layout) if layout else ours[key]
        err = np.abs(g - expected).max()
        if err > GRAD_TOLERANCE * np.abs(expected).max() + 1e-9 * model_scale:
            failures.append(f"{key}: max |Δ| {err:.2e}, max |grad| {np.abs(expected).max():.2e}")
    assert not failures, "gradients differ from timm's:\n" + "\n".join(failures)

    buffers = {k: b.numpy() for k, b in reference.named_buffers() if "running" in k}
    assert buffers.keys() == stats.keys()
    for key, value in buffers.items():
        assert relative_error(stats[key], value) <= STAT_TOLERANCE, key
