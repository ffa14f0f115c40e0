"""Host-side initialisation: seeded, equal whether the model is built eagerly or under jit, with the
distributions the layers promise, and with the blocks timm's construction keywords ask for."""

import jax
import numpy as np
import pytest
from flax import nnx

import knifejax as kj


def _leaves(model):
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]


def test_same_seed_same_parameters_eager_or_jitted_and_other_seeds_differ():
    eager = _leaves(kj.create_model("mobilenetv3_small_100", num_classes=3, seed=4))
    jitted = _leaves(nnx.jit(lambda: kj.create_model("mobilenetv3_small_100", num_classes=3, seed=4))())
    other = _leaves(kj.create_model("mobilenetv3_small_100", num_classes=3, seed=5))
    assert all(np.array_equal(a, b) for a, b in zip(eager, jitted))
    assert not all(np.array_equal(a, b) for a, b in zip(eager, other) if a.std() > 0)


def test_initial_distributions():
    resnet = kj.create_model("resnet50", num_classes=1000, seed=0)
    conv = np.asarray(resnet.layer4[0].conv2.weight[...])  # He normal on fan-out: 3 * 3 * 512
    np.testing.assert_allclose(conv.std(), np.sqrt(2.0 / (9 * 512)), rtol=0.02)
    fc = np.asarray(resnet.fc.weight[...])  # torch Linear: uniform(+-1/sqrt(fan_in))
    bound = 1 / np.sqrt(2048)
    assert -bound <= fc.min() < -0.99 * bound and 0.99 * bound < fc.max() < bound
    vit = kj.create_model("vit_tiny_patch16_224", img_size=32, seed=0)
    qkv = np.asarray(vit.blocks[0].attn.qkv.weight[...])  # timm trunc_normal(std=.02), cut at +-2
    assert np.abs(qkv).max() <= 2.0 and abs(qkv.std() - 0.02) < 0.001
    assert np.abs(np.asarray(vit.cls_token[...])).max() < 1e-5


def test_layers_overrides_a_resnet_s_blocks_per_stage_as_timm_s_keyword_and_a_wrong_count_is_one_line():
    model = kj.create_model("skresnet18", layers=(1, 2, 1, 3), num_classes=3)
    assert [len(stage) for stage in (model.layer1, model.layer2, model.layer3, model.layer4)] == [1, 2, 1, 3]
    for layers in [(2, 2), (2, 2, 0, 2), (2, 2, 2.0, 2)]:
        with pytest.raises(ValueError, match=r"layers must be four block counts of at least 1, one per stage, got "):
            kj.create_model("resnet18", layers=layers)
