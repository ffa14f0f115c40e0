"""ViT against timm: position-embedding resampling on load (the interpolation itself, and checkpoints made
for one size loaded at another), pretrained configurations per tag, pooling variants, stochastic depth,
stages, and the other adaptations of timm's checkpoint filter.

Tolerances: model outputs within 1e-4 of the largest |timm value| (see test_forward.py). Resampled arrays
within 1e-5 of the largest |value|: torch resamples in float32 (~1e-6 from exact, measured), knifejax in
float64; a wrong kernel (a = -0.75, no antialiasing, clamped edges) is off by >= 1e-2.
"""

import jax
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from flax import nnx

import knifejax as kj
from knifejax.models.pos_embed import resample_patch_embed, resize_bicubic_aa
from tests.reference import nchw, reference_pair
from knifejax.train.optim import tree_path_name
from knifejax.train.transfer import frozen_prefixes, trainable_mask
from knifejax.weights import timm_state_dict
from tests.jitted import forward
from tests.parity.comparison import relative_error

TOLERANCE = 1e-4
RESAMPLE_TOLERANCE = 1e-5

# (old grid, new grid): up (ViT 224 -> 384), down (antialiasing widens the kernel), non-square, mixed. Output
# widths of 1 are left out: torch 2.13's CPU antialiased kernels copy the first output row into every row
# there (bilinear too), a torch bug, not timm's intended math.
GRIDS = [((14, 14), (24, 24)), ((24, 24), (14, 14)), ((14, 14), (10, 6)), ((14, 14), (20, 8)), ((7, 5), (3, 11)),
         ((12, 12), (2, 3)), ((4, 4), (1, 1))]  # fmt: skip


def _torch_resize(grid: np.ndarray, size) -> np.ndarray:
    t = torch.from_numpy(grid).permute(2, 0, 1)[None]
    out = F.interpolate(t, size=size, mode="bicubic", antialias=True, align_corners=False)
    return out[0].permute(1, 2, 0).double().numpy()


@pytest.mark.parametrize("old,new", GRIDS)
def test_interpolation_equals_torch_antialiased_bicubic(old, new):
    grid = np.random.default_rng(0).standard_normal((*old, 5)).astype(np.float32)
    expected = _torch_resize(grid, new)
    assert relative_error(resize_bicubic_aa(grid, new), expected) <= RESAMPLE_TOLERANCE
    if max(new) > 1:  # the tolerance tells kernels apart: PyTorch's plain bicubic (a = -0.75, no antialias) is far off
        plain = F.interpolate(torch.from_numpy(grid).permute(2, 0, 1)[None], size=new, mode="bicubic", align_corners=False)
        assert relative_error(resize_bicubic_aa(grid, new), plain[0].permute(1, 2, 0).double().numpy()) > 1e-2


@pytest.mark.parametrize("old,new", [(16, 8), (8, 16), (16, 14)])
def test_patch_embed_resampling_equals_timm(timm, old, new):
    from timm.layers import resample_patch_embed as timm_resample_patch_embed

    kernel = np.random.default_rng(1).standard_normal((4, 3, old, old)).astype(np.float32)
    expected = timm_resample_patch_embed(torch.from_numpy(kernel), [new, new]).numpy()
    assert relative_error(resample_patch_embed(kernel, (new, new)), expected) <= RESAMPLE_TOLERANCE


def _random_checkpoint(timm, name, path, **kwargs):
    """A random timm ViT saved as .safetensors; class token and position embeddings of unit scale so the
    resampling shows in the outputs."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model(name, **kwargs)
    with torch.no_grad():
        model.pos_embed.normal_()
        model.cls_token.normal_()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return model


# (architecture of the checkpoint's model, img_size it was saved at, img_size it is loaded at)
RESIZES = [
    ("vit_tiny_patch16_224", 224, 384),  # 14x14 -> 24x24
    ("vit_tiny_patch16_384", 384, 224),  # 24x24 -> 14x14 (the configuration says 384)
    ("vit_tiny_patch16_224", 224, (160, 96)),  # 14x14 -> 10x6
    ("vit_tiny_patch16_224", 224, (320, 112)),  # 14x14 -> 20x7: up in height, down in width
]


@pytest.mark.slow
@pytest.mark.parametrize("name,saved,loaded", RESIZES)
def test_checkpoint_for_another_size_loads_as_timm_resizes_it(timm, tmp_path, name, saved, loaded):
    path = tmp_path / "vit.safetensors"
    source = _random_checkpoint(timm, name, path, img_size=saved)
    reference = timm.create_model(name, img_size=loaded, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    model = kj.create_model(name, img_size=loaded, pretrained=True, pretrained_cfg_overlay={"file": str(path)})

    expected = reference.pos_embed.detach().numpy()
    assert model.pos_embed[...].shape == expected.shape != tuple(source.pos_embed.shape)
    assert np.array_equal(model.pos_embed[0, 0], expected[0, 0])  # the class token's entry is kept as is
    assert relative_error(model.pos_embed[...], expected) <= RESAMPLE_TOLERANCE
    direct = kj.load_timm_weights(kj.create_model(name, img_size=loaded), path)  # the same through the hook
    assert np.array_equal(direct.pos_embed[...], model.pos_embed[...])

    reference.eval()
    model.eval()
    h, w = model.img_size
    x = np.random.default_rng(0).standard_normal((1, h, w, 3), dtype=np.float32)
    with torch.no_grad():
        t_logits = reference(nchw(x)).numpy()
    assert relative_error(forward(model, x), t_logits) <= TOLERANCE


@pytest.mark.slow
def test_patch_size_change_resamples_kernel_and_grid_as_timm(timm, tmp_path):
    path = tmp_path / "s16.safetensors"
    source = _random_checkpoint(timm, "vit_small_patch16_224", path, img_size=64, num_classes=0)  # 4x4 grid
    kwargs = dict(img_size=48, num_classes=0)  # 6x6 grid of 8 px patches
    reference = timm.create_model("vit_small_patch8_224", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                                  **kwargs)  # fmt: skip
    model = nnx.eval_shape(lambda: kj.create_model("vit_small_patch8_224", **kwargs))  # shapes suffice here
    adapted = model.adapt_timm_state({k: v.numpy() for k, v in source.state_dict().items()})
    for key in ("patch_embed.proj.weight", "pos_embed"):
        expected = reference.state_dict()[key].numpy()
        assert adapted[key].shape == expected.shape
        assert relative_error(adapted[key], expected) <= RESAMPLE_TOLERANCE, key


def test_old_checkpoint_layouts_are_adapted_as_timm(timm):
    reference, model = reference_pair(timm, "vit_tiny_patch16_224", num_classes=3, img_size=32)
    state = {k: v.numpy() for k, v in reference.state_dict().items()}
    old = dict(state)
    old["patch_embed.proj.weight"] = state["patch_embed.proj.weight"].reshape(192, -1)  # pre-conv patchify
    old["pre_logits.fc.weight"] = np.zeros((192, 192), np.float32)  # representation layer timm drops
    old["pre_logits.fc.bias"] = np.zeros((192,), np.float32)
    loaded = kj.load_timm_weights(kj.create_model("vit_tiny_patch16_224", num_classes=3, img_size=32, seed=5), old)
    assert all(np.array_equal(v, state[k]) for k, v in timm_state_dict(loaded).items())


def test_unknown_non_square_grid_is_reported_and_model_unchanged(timm):
    reference = timm.create_model("vit_tiny_patch16_224", img_size=(48, 32))  # 3x2 grid, not the config's 14x14
    model = kj.create_model("vit_tiny_patch16_224", img_size=64)
    before = np.array(model.pos_embed[...])
    with pytest.raises(kj.WeightMismatchError, match=r"pos_embed: checkpoint \(1, 7, 192\)"):
        kj.load_timm_weights(model, reference.state_dict())
    assert np.array_equal(model.pos_embed[...], before)


TAGS = [
    "vit_small_patch16_224.dino",
    "vit_base_patch16_224.augreg2_in21k_ft_in1k",
    "vit_base_patch16_clip_224.laion2b_ft_in12k_in1k",
    "vit_base_patch16_clip_224.openai",
    "vit_base_patch16_224.mae",
    "vit_base_patch32_384.augreg_in1k",
]


@pytest.mark.parametrize("tag", TAGS)
def test_tag_configuration_and_classifier_equal_timm(timm, tag):
    model = nnx.eval_shape(lambda: kj.create_model(tag))
    with torch.device("meta"):
        reference = timm.create_model(tag)
    theirs = reference.pretrained_cfg
    for key in ("mean", "std", "num_classes", "input_size"):
        assert tuple(np.atleast_1d(model.pretrained_cfg[key])) == tuple(np.atleast_1d(theirs[key])), key
    assert model.num_classes == reference.num_classes
    if reference.num_classes:
        assert model.head.weight.shape[-1] == reference.head.out_features
    else:
        assert model.head is None and isinstance(reference.head, torch.nn.Identity)
    assert model.img_size == reference.patch_embed.img_size


@pytest.mark.slow
@pytest.mark.parametrize("global_pool", ["avg", "avgmax", "max", ""])
def test_pooling_variants_equal_timm(timm, global_pool):
    reference, model = reference_pair(timm, "vit_tiny_patch16_224", num_classes=10, img_size=(32, 48),
                                      global_pool=global_pool)  # fmt: skip
    assert (model.fc_norm is not None) == (global_pool != "") == (model.norm is None)
    reference.eval()
    model.eval()
    x = np.random.default_rng(0).standard_normal((2, 32, 48, 3), dtype=np.float32)
    with torch.no_grad():
        t_tokens = reference.forward_features(nchw(x))
        t_pre = reference.forward_head(t_tokens, pre_logits=True)
        t_logits = reference.forward_head(t_tokens)
    tokens = model.forward_features(x)  # eager: quicker than compiling each variant here
    pre, logits = model.forward_head(tokens, pre_logits=True), model.forward_head(tokens)
    assert tokens.shape == (2, 1 + 2 * 3, 192) == tuple(t_tokens.shape)
    for ours, theirs in ((tokens, t_tokens), (pre, t_pre), (logits, t_logits)):
        assert ours.shape == tuple(theirs.shape)
        assert relative_error(ours, theirs.numpy()) <= TOLERANCE


@pytest.mark.slow
def test_without_classifier_returns_pooled_features_and_wrong_size_is_refused(timm):
    reference, model = reference_pair(timm, "vit_tiny_patch16_224", num_classes=0, img_size=32)
    assert model.head is None and model.num_features == 192
    reference.eval()
    model.eval()
    x = np.random.default_rng(0).standard_normal((2, 32, 32, 3), dtype=np.float32)
    with torch.no_grad():
        expected = reference(nchw(x)).numpy()
    out = forward(model, x)
    assert out.shape == (2, 192)
    assert relative_error(out, expected) <= TOLERANCE
    with pytest.raises(ValueError, match=r"input of 48x32 px .* does not match this ViT's img_size 32x32"):
        model(np.zeros((1, 48, 32, 3), np.float32))
    with pytest.raises(ValueError, match="global_pool"):
        kj.create_model("vit_tiny_patch16_224", global_pool="map")


@pytest.mark.slow
def test_stochastic_depth_is_timm_s_schedule_random_in_training_and_off_in_eval(timm):
    reference, model = reference_pair(timm, "vit_tiny_patch16_224", num_classes=4, img_size=32, drop_path_rate=0.3)
    assert model.blocks[0].drop_path1 is None
    rates = [(b.drop_path1.rate, b.drop_path2.rate) for b in model.blocks[1:]]
    t_rates = [(b.drop_path1.drop_prob, b.drop_path2.drop_prob) for b in reference.blocks[1:]]
    np.testing.assert_allclose(rates, t_rates, rtol=1e-6)  # linear in depth, 0 .. drop_path_rate

    x = np.random.default_rng(0).standard_normal((8, 32, 32, 3), dtype=np.float32)
    model.train()
    a, b = forward(model, x), forward(model, x)
    assert not np.allclose(a, b)
    model.eval()
    reference.eval()
    with torch.no_grad():
        expected = reference(nchw(x)).numpy()
    first = forward(model, x)
    assert np.array_equal(first, forward(model, x))
    assert relative_error(first, expected) <= TOLERANCE


EMBED = ("patch_embed", "cls_token", "pos_embed")


@pytest.mark.parametrize(
    "name,first", [("vit_tiny_patch16_224", EMBED), ("vit_base_patch32_clip_224", (*EMBED, "norm_pre"))]
)
def test_stages_freeze_the_embedding_including_token_and_position_parameters(name, first):
    model = nnx.eval_shape(lambda: kj.create_model(name, num_classes=3))
    stages = model.stages()
    assert stages[0] == first
    assert stages[1:-1] == [(f"blocks.{i}",) for i in range(12)]
    assert stages[-1] == ("norm",)
    assert nnx.eval_shape(lambda: kj.create_model(name, num_classes=3, global_pool="avg")).stages()[-1] == ("fc_norm",)

    params = nnx.state(model, nnx.Param)
    flags = trainable_mask(frozen_prefixes(model, 1))(params)
    frozen = {tree_path_name(path) for path, flag in jax.tree_util.tree_leaves_with_path(flags) if not flag}
    expected = {"cls_token", "pos_embed", "patch_embed.proj.weight"}
    expected |= {"norm_pre.weight", "norm_pre.bias"} if "norm_pre" in first else {"patch_embed.proj.bias"}
    assert frozen == expected


def test_weight_decay_mask_exempts_what_timm_exempts(timm):
    """timm's optimizer factory decays only >1-D weights outside `model.no_weight_decay()`: a ViT's position
    embeddings and class token are not decayed, here as there."""
    from functools import partial

    from timm.optim import param_groups_weight_decay

    with torch.device("meta"):
        reference = timm.create_model("vit_tiny_patch16_224", num_classes=3, img_size=32)
    groups = param_groups_weight_decay(reference, 0.05, no_weight_decay_list=reference.no_weight_decay())
    names = {id(p): n for n, p in reference.named_parameters()}
    expected = {names[id(p)] for g in groups if g["weight_decay"] for p in g["params"]}

    model = kj.create_model("vit_tiny_patch16_224", num_classes=3, img_size=32)
    mask = partial(kj.decay_mask_timm, no_weight_decay=model.no_weight_decay())(nnx.state(model, nnx.Param))
    decayed = {tree_path_name(path) for path, flag in jax.tree_util.tree_leaves_with_path(mask) if flag}
    assert decayed == expected
    assert "pos_embed" not in decayed and "blocks.0.attn.qkv.weight" in decayed
