"""Transfer modes and precision: frozen stages stay bit-identical (weights and, in eval mode, BatchNorm
statistics) while the rest trains; bf16 compute keeps float32 master weights and float32 statistics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import knifejax as kj
from knifejax.train.steps import init_state, make_train_step
from knifejax.train.transfer import frozen_prefixes, trainable_mask
from tests.tiny_model import EveryCpuPath

MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


def _batches(n):
    rng = np.random.default_rng(0)
    return [(rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8), rng.integers(0, 3, 4).astype(np.int32))
            for _ in range(n)]  # fmt: skip


def _flat(state):
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_flatten_with_path(state)[0]}


def test_stages_are_counted_from_the_stem():
    resnet = kj.create_model("resnet18", num_classes=3)
    assert frozen_prefixes(resnet, 2) == ("conv1", "bn1", "layer1")
    effnet = kj.create_model("efficientnet_b0", num_classes=3)
    assert frozen_prefixes(effnet, 3) == ("conv_stem", "bn1", "blocks.0", "blocks.1")
    assert len(effnet.stages()) == 9  # stem, 7 block stages, head conv
    with pytest.raises(ValueError, match=r"0\.\.5"):
        frozen_prefixes(resnet, 6)


@pytest.mark.slow
@pytest.mark.parametrize("frozen_bn_eval", [True, False])
def test_frozen_stages_stay_bit_identical_and_the_rest_trains(frozen_bn_eval):
    model = kj.create_model("resnet18", num_classes=3, seed=0)
    frozen = frozen_prefixes(model, 3)  # stem, layer1, layer2
    # weight decay too: a frozen parameter must not decay either
    optimizer = kj.make_optimizer("adamw", 1e-2, weight_decay=0.1, trainable=trainable_mask(frozen))
    graphdef, state = init_state(model, optimizer, frozen if frozen_bn_eval else ())
    before_params, before_rest = _flat(state.params), _flat(state.rest)
    step = make_train_step(graphdef, optimizer, normalize=(MEAN, STD))
    for images, labels in _batches(3):
        state, _ = step(state, images, labels)
    after_params, after_rest = _flat(state.params), _flat(state.rest)

    def is_frozen(key):
        return any(key.startswith(f"['{p}']") for p in ("conv1", "bn1", "layer1", "layer2"))

    for key, value in after_params.items():
        if is_frozen(key):
            np.testing.assert_array_equal(value, before_params[key], err_msg=key)
        else:
            assert not np.array_equal(value, before_params[key]), key
    frozen_stats = [k for k in after_rest if is_frozen(k)]
    assert frozen_stats
    changed = [k for k in frozen_stats if not np.array_equal(after_rest[k], before_rest[k])]
    assert (changed == []) == frozen_bn_eval
    assert not np.array_equal(after_rest["['layer4'][1]['bn2']['running_mean'].value"],
                              before_rest["['layer4'][1]['bn2']['running_mean'].value"])  # fmt: skip


@pytest.mark.slow
def test_bf16_compute_keeps_float32_master_weights_and_statistics():
    """On `EveryCpuPath`: each kernel of the real networks (convolution, BatchNorm, max-pool, depthwise, 1x1) once,
    both steps in 4 s, where ResNet-18's took 12-16 s (2-core CPU)."""
    losses = {}
    for precision in ("fp32", "bf16"):
        model = EveryCpuPath(3, rngs=nnx.Rngs(0))
        optimizer = kj.make_optimizer("sgd", 1e-2)
        graphdef, state = init_state(model, optimizer)
        step = make_train_step(graphdef, optimizer, normalize=(MEAN, STD), precision=precision)
        images, labels = _batches(1)[0]
        state, metrics = step(state, images, labels)
        losses[precision] = float(metrics["loss"])
        dtypes = {x.dtype for x in jax.tree.leaves(state.params) + jax.tree.leaves(state.rest)}
        assert dtypes == {jnp.dtype(jnp.float32)}, dtypes
    # bf16 keeps 8 bits of mantissa: the loss agrees to about 1%, not to float32 precision
    assert abs(losses["bf16"] - losses["fp32"]) < 0.02 * losses["fp32"]
    assert losses["bf16"] != losses["fp32"]
