"""SKResNet beyond the shared parity tests: the per-block attention over the two kernel paths equals timm's
(so a path-order or softmax-axis mistake is located, not just seen in the logits), pooling variants and
`num_classes=0`, stochastic depth in train mode, `zero_init_last`, and stage freezing reaching the SK
attention's parameters and BatchNorms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import knifejax as kj
from knifejax.models.layers import BatchNorm2d
from knifejax.models.skresnet import SelectiveKernelAttn
from tests.reference import nchw, reference_pair
from knifejax.train.transfer import freeze_batchnorm, frozen_prefixes, trainable_mask
from tests.parity.comparison import relative_error


def _blocks(model):
    return [b for name in ("layer1", "layer2", "layer3", "layer4") for b in getattr(model, name)]


@pytest.mark.slow
def test_path_attention_sums_to_one_and_equals_timm_in_every_block(timm, monkeypatch):
    reference, model = reference_pair(timm, "skresnet18", num_classes=10)
    reference.eval()
    model.eval()
    x = np.random.default_rng(3).standard_normal((2, 45, 38, 3), dtype=np.float32)

    expected = []
    hooks = [
        b.conv1.attn.register_forward_hook(lambda _m, _i, out: expected.append(out.numpy()))
        for b in _blocks(reference)
    ]
    with torch.no_grad():
        reference(nchw(x))
    for h in hooks:
        h.remove()

    recorded = []
    original = SelectiveKernelAttn.__call__
    monkeypatch.setattr(
        SelectiveKernelAttn, "__call__", lambda self, p: recorded.append(original(self, p)) or recorded[-1]
    )

    @nnx.jit
    def attention_weights(m, v):  # the recorded values are this trace's, so they can be returned
        recorded.clear()
        m(v)
        return list(recorded)

    ours = jax.device_get(attention_weights(model, jnp.asarray(x)))

    assert len(ours) == len(expected) == 8
    for i, (w, t) in enumerate(zip(ours, expected)):
        w = np.asarray(w)
        assert w.shape == t.transpose(0, 1, 3, 4, 2).shape, i  # (B, paths, 1, 1, C) vs timm (B, paths, C, 1, 1)
        np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-6, err_msg=f"block {i}")
        np.testing.assert_allclose(w, t.transpose(0, 1, 3, 4, 2), atol=1e-5, err_msg=f"block {i}")
    # the weights are far from uniform, so a swapped path order or softmax axis could not pass
    assert max(np.abs(np.asarray(w) - 0.5).max() for w in ours) > 0.1


@pytest.mark.slow
@pytest.mark.parametrize("pool,num_classes", [("catavgmax", 5), ("max", 0)])
def test_pooling_variants_and_headless_model_equal_timm(timm, pool, num_classes):
    reference, model = reference_pair(timm, "skresnet18", num_classes=num_classes, global_pool=pool)
    reference.eval()
    model.eval()
    assert (model.fc is None) == (num_classes == 0)
    assert (model.num_features, model.head_hidden_size) == (reference.num_features, reference.head_hidden_size)
    x = np.random.default_rng(4).standard_normal((2, 40, 48, 3), dtype=np.float32)
    with torch.no_grad():
        expected = reference(nchw(x)).numpy()
    out = jax.device_get(nnx.jit(lambda m, v: m(v))(model, x))
    assert out.shape == expected.shape == (2, num_classes or reference.head_hidden_size)
    assert relative_error(out, expected) <= 1e-4


@pytest.mark.slow
def test_drop_path_rates_as_timm_and_train_mode_drops_whole_residual_branches(timm):
    model = kj.create_model("skresnet18", num_classes=3, drop_path_rate=0.5, seed=0)
    reference = timm.create_model("skresnet18", num_classes=3, drop_path_rate=0.5)
    ours = [b.drop_path.rate if b.drop_path is not None else 0.0 for b in _blocks(model)]
    theirs = [b.drop_path.drop_prob if b.drop_path is not None else 0.0 for b in _blocks(reference)]
    np.testing.assert_allclose(ours, theirs)

    block = model.layer4[1]  # the last block: rate 0.5, identity shortcut
    x = jax.random.normal(jax.random.key(0), (16, 3, 3, 512))
    run = nnx.jit(lambda b, v: b(v))
    model.eval()
    assert block.drop_path.deterministic
    y = nnx.jit(lambda b, v: b.conv2(b.conv1(v)))(block, x)  # the residual branch, eval mode
    np.testing.assert_allclose(run(block, x), jax.nn.relu(y + x), atol=1e-5)

    model.train()
    for _, m in nnx.iter_modules(block):
        if isinstance(m, BatchNorm2d):
            m.use_running_average = True  # the branch as above, so only drop path acts
    out = run(block, x)
    kept = jax.nn.relu(y / 0.5 + x)
    dropped = jax.nn.relu(x)
    is_kept = np.array([np.allclose(o, k, atol=1e-5) for o, k in zip(out, kept)])
    is_dropped = np.array([np.allclose(o, d, atol=1e-6) for o, d in zip(out, dropped)])
    assert np.all(is_kept ^ is_dropped)  # every sample is exactly one of the two
    assert is_kept.any() and is_dropped.any()
    assert not np.array_equal(out, run(block, x))  # a fresh mask each call


def test_zero_init_last_default_as_timm(timm):
    default = kj.create_model("skresnet18", num_classes=3)
    zeroed = kj.create_model("skresnet18", num_classes=3, zero_init_last=True)
    assert all(np.all(b.conv2.bn.weight[...] == 1) for b in _blocks(default))
    assert all(np.all(b.conv2.bn.weight[...] == 0) for b in _blocks(zeroed))
    assert all(torch.all(b.conv2.bn.weight == 1) for b in _blocks(timm.create_model("skresnet18")))


def test_freezing_two_stages_covers_the_stem_and_every_sk_parameter_of_layer1():
    model = kj.create_model("skresnet18", num_classes=3)
    prefixes = frozen_prefixes(model, 2)
    assert prefixes == ("conv1", "bn1", "layer1")

    mask = trainable_mask(prefixes)(nnx.state(model, nnx.Param))
    flags = {
        ".".join(str(k.key if isinstance(k, jax.tree_util.DictKey) else k.idx) for k in path[:-1]): bool(v)
        for path, v in jax.tree_util.tree_flatten_with_path(mask)[0]
    }
    frozen = sorted(k for k, trainable in flags.items() if not trainable)
    assert "layer1.1.conv1.attn.fc_select.weight" in frozen and "layer1.0.conv1.paths.1.conv.weight" in frozen
    assert all(k.split(".")[0] in ("conv1", "bn1", "layer1") for k in frozen)
    assert all(trainable for k, trainable in flags.items() if k.split(".")[0] not in ("conv1", "bn1", "layer1"))
    # stem BN + 2 blocks x (2 path BNs, attention BN, conv2 BN)
    model.train()
    assert freeze_batchnorm(model, prefixes) == 1 + 2 * 4
