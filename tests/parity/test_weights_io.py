"""Checkpoint I/O against timm: parameter counts, save -> timm round trip, real Lite0 weights, and the
all-or-nothing error for checkpoints that do not fit."""

import os

import jax
import numpy as np
import pytest
import torch
from flax import nnx

import knifejax as kj
from knifejax.weights import timm_state_dict
from tests.jitted import forward
from tests.parity.comparison import relative_error, size_kwargs
from tests.reference import nchw, reference_pair


@pytest.mark.parametrize("name", kj.list_models())
def test_parameter_count_equals_timm(timm, name):
    abstract = nnx.eval_shape(lambda: kj.create_model(name))
    ours = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
    with torch.device("meta"):
        reference = timm.create_model(name)
    assert ours == sum(p.numel() for p in reference.parameters())


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["resnet18", "tf_efficientnet_lite0", "mobilenetv3_small_100", "skresnet18", "vit_tiny_patch16_224"]
)
def test_saved_weights_load_strictly_into_timm_with_equal_logits(timm, tmp_path, name):
    model = kj.create_model(name, num_classes=7, seed=3, **size_kwargs(name, 48, 48))
    model.eval()
    path = tmp_path / "model.safetensors"
    kj.save_timm_weights(model, path)

    reference = timm.create_model(name, num_classes=7, **size_kwargs(name, 48, 48))
    from safetensors.torch import load_file

    reference.load_state_dict(load_file(path), strict=True)
    reference.eval()
    x = np.random.default_rng(0).standard_normal((2, 48, 48, 3), dtype=np.float32)
    with torch.no_grad():
        expected = reference(nchw(x)).numpy()
    assert relative_error(forward(model, x), expected) <= 1e-4


@pytest.mark.slow
def test_lite0_imagenet_weights_offline_call_chelsea_an_egyptian_cat():
    from skimage import data

    model = kj.create_model("tf_efficientnet_lite0", pretrained=True)
    model.eval()
    x = kj.preprocess(data.chelsea(), model.pretrained_cfg)  # the study's resize: 224x224, bilinear
    probs = jax.nn.softmax(forward(model, x), axis=-1)[0]
    assert int(np.argmax(probs)) == 285  # ImageNet "Egyptian cat"
    assert float(probs[285]) > 0.5


def _params(model):
    return {k: np.array(v) for k, v in timm_state_dict(model).items()}


def _assert_unchanged(model, before):
    after = _params(model)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_truncated_file_raises_and_leaves_model_unchanged(tmp_path):
    source = kj.create_model("resnet18", num_classes=5, seed=1)
    path = tmp_path / "truncated.safetensors"
    kj.save_timm_weights(source, path)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    model = kj.create_model("resnet18", num_classes=5, seed=2)
    before = _params(model)
    with pytest.raises(kj.CheckpointError, match="truncated.safetensors"):
        kj.load_timm_weights(model, path)
    _assert_unchanged(model, before)


def test_wrong_architecture_lists_every_problem_and_leaves_model_unchanged():
    state = timm_state_dict(kj.create_model("resnet34", num_classes=5))
    model = kj.create_model("resnet18", num_classes=5)
    before = _params(model)
    with pytest.raises(kj.WeightMismatchError) as err:
        kj.load_timm_weights(model, state)
    message = str(err.value)
    assert "\n" not in message and len(err.value.unexpected) == 80 and "layer3.5.conv2.weight" in err.value.unexpected
    assert "unexpected (80)" in message  # 8 extra BasicBlocks x (2 convs + 2 BatchNorms x 4)
    assert "left unchanged" in message
    _assert_unchanged(model, before)


def test_missing_key_is_named_and_model_unchanged():
    state = timm_state_dict(kj.create_model("tf_efficientnet_lite0", num_classes=5, seed=1))
    del state["blocks.2.1.conv_dw.weight"]
    model = kj.create_model("tf_efficientnet_lite0", num_classes=5, seed=2)
    before = _params(model)
    with pytest.raises(kj.WeightMismatchError, match=r"missing \(1\): blocks.2.1.conv_dw.weight\. Check"):
        kj.load_timm_weights(model, state)
    _assert_unchanged(model, before)
    kj.load_timm_weights(model, state, strict=False)
    assert np.array_equal(_params(model)["conv_stem.weight"], state["conv_stem.weight"])


def test_shape_mismatch_is_an_error_even_when_not_strict():
    state = timm_state_dict(kj.create_model("resnet18", num_classes=5))
    state["layer1.0.conv1.weight"] = state["layer1.0.conv1.weight"][:, :32]
    with pytest.raises(kj.WeightMismatchError, match="layer1.0.conv1.weight: checkpoint"):
        kj.load_timm_weights(kj.create_model("resnet18", num_classes=5), state, strict=False)


def test_classifier_of_another_class_count_stays_fresh_with_a_warning():
    state = timm_state_dict(kj.create_model("resnet18", num_classes=1000, seed=1))
    model = kj.create_model("resnet18", num_classes=192, seed=2)
    fresh_head = np.array(model.fc.weight[...])
    with pytest.warns(UserWarning, match="classifier keeps its fresh initialisation"):
        kj.load_timm_weights(model, state)
    assert np.array_equal(model.fc.weight[...], fresh_head)
    assert np.array_equal(_params(model)["layer4.1.conv2.weight"], state["layer4.1.conv2.weight"])


def test_a_headless_checkpoint_loads_with_the_classifier_fresh_as_timm_loads_dino(tmp_path):
    """DINO's ViT tags have no classifier (`num_classes` 0): fine-tuning one for 192 classes keeps every other
    weight of the file and a fresh head, as `timm.create_model(..., pretrained=True, num_classes=192)` does."""
    headless = kj.create_model("vit_small_patch8_224.dino", seed=1)
    assert headless.num_classes == 0
    kj.save_timm_weights(headless, tmp_path / "vit_small_patch8_224.dino.safetensors")
    with pytest.warns(UserWarning, match=r"checkpoint has no classifier \(head\.\*\): this model's classifier for 192"):
        model = kj.create_model("vit_small_patch8_224.dino", pretrained=True, num_classes=192, seed=2,
                                pretrained_cfg_overlay={"file": tmp_path / "vit_small_patch8_224.dino.safetensors"})
    fresh = timm_state_dict(kj.create_model("vit_small_patch8_224.dino", num_classes=192, seed=2))
    loaded, saved = timm_state_dict(model), timm_state_dict(headless)
    assert np.array_equal(loaded["head.weight"], fresh["head.weight"]) and loaded["head.weight"].shape == (192, 384)
    assert all(np.array_equal(loaded[k], v) for k, v in saved.items())
    with pytest.raises(kj.WeightMismatchError, match="missing"):  # the rest of the model is still checked
        kj.load_timm_weights(kj.create_model("vit_small_patch8_224", num_classes=5),
                             {k: v for k, v in saved.items() if k != "norm.weight"})


def test_checkpoint_formats_users_have_load_alike(tmp_path, timm):
    reference, model = reference_pair(timm, "resnet18", num_classes=4)
    expected = _params(model)
    wrapped = {"epoch": 3, "state_dict": {f"module.{k}": v.half() for k, v in reference.state_dict().items()}}
    torch.save(wrapped, tmp_path / "train.pth")
    loaded = kj.load_timm_weights(kj.create_model("resnet18", num_classes=4), tmp_path / "train.pth")
    for key, value in _params(loaded).items():
        np.testing.assert_allclose(value, expected[key], rtol=1e-3, atol=1e-3)  # fp16 rounding
    np.savez(tmp_path / "weights.npz", **{k: v.numpy() for k, v in reference.state_dict().items()})
    loaded = kj.load_timm_weights(kj.create_model("resnet18", num_classes=4), tmp_path / "weights.npz")
    assert all(np.array_equal(v, expected[k]) for k, v in _params(loaded).items())
