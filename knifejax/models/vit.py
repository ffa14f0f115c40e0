"""Vision Transformers (ViT-Ti/S/B, patch 8/16/32, 224 and 384 px, and the CLIP image towers) as timm's
`VisionTransformer`.

Attribute paths equal timm's state-dict keys: `cls_token`, `pos_embed`, `patch_embed.proj`, `norm_pre` (CLIP),
`blocks.<i>.norm1`, `blocks.<i>.attn.qkv`, `blocks.<i>.attn.proj`, `blocks.<i>.norm2`, `blocks.<i>.mlp.fc1/fc2`,
`norm` (or `fc_norm` with average/max pooling), `head`. Tokens are (B, 1 + N, D), the class token first and the
N = (H // patch) * (W // patch) patch tokens in row-major order, as timm's.

A ViT is built for one input size (`img_size`), since its position embeddings are one per patch; loading a
checkpoint made for another size resamples them as timm does (`adapt_timm_state`, called by
`knifejax.load_timm_weights`).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from knifejax.models import init
from knifejax.models.layers import Conv2d, DropPath, LayerNorm, Linear, gelu
from knifejax.models.pos_embed import resample_abs_pos_embed, resample_patch_embed
from knifejax.models.registry import register_model

GLOBAL_POOLS = ("token", "avg", "avgmax", "max", "")


class ViTLinear(Linear):
    """`Linear` with timm's ViT init: weight trunc-normal std .02, bias zero."""

    def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs):
        self.weight = nnx.Param(init.trunc_normal(rngs, (in_features, out_features), 0.02))
        self.bias = nnx.Param(init.constant((out_features,), 0.0))


class PatchEmbed(nnx.Module):
    """Non-overlapping patches (a conv with kernel = stride = patch, no padding) -> (B, N, D) tokens. Pixels
    beyond the last whole patch are dropped, as the strided conv of timm's PatchEmbed does."""

    def __init__(
        self, img_size: tuple[int, int], patch_size: int, in_chans: int, embed_dim: int, *, bias: bool, rngs: nnx.Rngs
    ):
        self.img_size = img_size
        self.grid_size = (img_size[0] // patch_size, img_size[1] // patch_size)
        if min(self.grid_size) < 1:
            raise ValueError(f"img_size {img_size} is smaller than one {patch_size}x{patch_size} patch")
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = Conv2d(in_chans, embed_dim, patch_size, stride=patch_size, padding=0, bias=bias, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.proj(x)
        return x.reshape(x.shape[0], -1, x.shape[-1])


class Attention(nnx.Module):
    """timm's multi-head self-attention: one qkv projection (with bias), softmax(q k^T / sqrt(head_dim)) in at
    least float32, heads concatenated, output projection."""

    def __init__(self, dim: int, num_heads: int, *, rngs: nnx.Rngs):
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = ViTLinear(dim, 3 * dim, rngs=rngs)
        self.proj = ViTLinear(dim, dim, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # (B, N, heads, head_dim)
        logits = jnp.einsum("bqhd,bkhd->bhqk", q * self.scale, k)
        weights = jax.nn.softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), axis=-1)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(v.dtype), v)
        return self.proj(out.reshape(b, n, c))


class Mlp(nnx.Module):
    def __init__(self, dim: int, hidden: int, *, rngs: nnx.Rngs):
        self.fc1 = ViTLinear(dim, hidden, rngs=rngs)
        self.fc2 = ViTLinear(hidden, dim, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(gelu(self.fc1(x)))


class Block(nnx.Module):
    """Pre-norm residual block: x + attn(norm1(x)), then x + mlp(norm2(x)), each branch with stochastic depth."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop_path: float, eps: float, *, rngs: nnx.Rngs):
        self.norm1 = LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, rngs=rngs)
        self.drop_path1 = DropPath(drop_path, rngs=rngs) if drop_path else None
        self.norm2 = LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), rngs=rngs)
        self.drop_path2 = DropPath(drop_path, rngs=rngs) if drop_path else None

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.attn(self.norm1(x))
        x = x + (self.drop_path1(y) if self.drop_path1 is not None else y)
        y = self.mlp(self.norm2(x))
        return x + (self.drop_path2(y) if self.drop_path2 is not None else y)


def _pair(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


class VisionTransformer(nnx.Module):
    def __init__(
        self,
        *,
        patch_size: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        img_size: int | tuple[int, int],
        num_classes: int,
        pretrained_cfg: dict[str, Any],
        in_chans: int = 3,
        mlp_ratio: float = 4.0,
        global_pool: str = "token",
        fc_norm: bool | None = None,
        pre_norm: bool = False,
        norm_eps: float = 1e-6,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        rngs: nnx.Rngs,
    ):
        if global_pool not in GLOBAL_POOLS:
            raise ValueError(
                f"global_pool must be one of {GLOBAL_POOLS} (timm's 'map' and 'prr' attention pooling are not "
                f"implemented), got {global_pool!r}"
            )
        self.pretrained_cfg = pretrained_cfg
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.patch_size = patch_size
        self.img_size = _pair(img_size)
        self.num_prefix_tokens = 1
        self.num_features = self.head_hidden_size = embed_dim
        self.grad_cam_layer = f"blocks.{depth - 1}.norm1"  # pytorch-grad-cam's ViT recipe (see knifejax.explain)

        # CLIP towers normalise before the blocks and have no patch-embedding bias, as timm's `pre_norm`.
        self.patch_embed = PatchEmbed(self.img_size, patch_size, in_chans, embed_dim, bias=not pre_norm, rngs=rngs)
        self.grid_size = self.patch_embed.grid_size
        num_patches = self.patch_embed.num_patches
        self.cls_token = nnx.Param(init.normal(rngs, (1, 1, embed_dim), 1e-6))
        self.pos_embed = nnx.Param(init.trunc_normal(rngs, (1, 1 + num_patches, embed_dim), 0.02))
        self.norm_pre = LayerNorm(embed_dim, eps=norm_eps) if pre_norm else None
        rates = [drop_path_rate * i / (depth - 1) for i in range(depth)] if depth > 1 else [0.0] * depth
        self.blocks = nnx.List(
            [Block(embed_dim, num_heads, mlp_ratio, rate, norm_eps, rngs=rngs) for rate in rates]
        )
        # timm: with average/max pooling the final norm moves after the pooling (`fc_norm`).
        use_fc_norm = global_pool in ("avg", "avgmax", "max") if fc_norm is None else fc_norm
        self.norm = None if use_fc_norm else LayerNorm(embed_dim, eps=norm_eps)
        self.fc_norm = LayerNorm(embed_dim, eps=norm_eps) if use_fc_norm else None
        self.head_drop = nnx.Dropout(drop_rate, rngs=rngs) if drop_rate > 0 else None
        self.head = ViTLinear(embed_dim, num_classes, rngs=rngs) if num_classes > 0 else None

    def stages(self) -> list[tuple[str, ...]]:
        """Module paths of the feature stages, input to output: the embedding (patch projection, class token,
        position embeddings, and CLIP's pre-norm), each block, the final norm.
        Freezing "the first N stages" (`knifejax.train.transfer`) counts in this list."""
        embed = ("patch_embed", "cls_token", "pos_embed") + (("norm_pre",) if self.norm_pre is not None else ())
        final = ("norm",) if self.norm is not None else ("fc_norm",)
        return [embed, *((f"blocks.{i}",) for i in range(len(self.blocks))), final]

    def no_weight_decay(self) -> set[str]:
        """timm's: parameter names its optimizer factory exempts from weight decay (besides 1-D parameters)."""
        return {"pos_embed", "cls_token", "reg_token", "dist_token"}

    def forward_features(self, x: jax.Array) -> jax.Array:
        """(B, H, W, C) at the model's img_size -> tokens (B, 1 + N, D) after the final norm, as timm's."""
        if tuple(x.shape[1:3]) != self.img_size:
            raise ValueError(
                f"input of {x.shape[1]}x{x.shape[2]} px (H x W) does not match this ViT's img_size "
                f"{self.img_size[0]}x{self.img_size[1]}: its position embeddings are fixed to that size. Resize "
                "the input, or create the model with img_size=(H, W) (pretrained position embeddings are then "
                "resampled as timm does)."
            )
        x = self.patch_embed(x)
        cls = jnp.broadcast_to(self.cls_token[...].astype(x.dtype), (x.shape[0], 1, x.shape[-1]))
        x = jnp.concatenate([cls, x], axis=1) + self.pos_embed[...].astype(x.dtype)
        if self.norm_pre is not None:
            x = self.norm_pre(x)
        for block in self.blocks:
            x = block(x)
        return self.norm(x) if self.norm is not None else x

    def pool(self, x: jax.Array) -> jax.Array:
        """timm's `global_pool_nlc`: the class token, or avg/max/avgmax over the patch tokens, or none ('')."""
        if self.global_pool == "token":
            return x[:, 0]
        if not self.global_pool:
            return x
        patches = x[:, self.num_prefix_tokens :]
        if self.global_pool == "avg":
            return jnp.mean(patches, axis=1)
        if self.global_pool == "max":
            return jnp.max(patches, axis=1)
        return 0.5 * (jnp.max(patches, axis=1) + jnp.mean(patches, axis=1))

    def forward_head(self, x: jax.Array, pre_logits: bool = False) -> jax.Array:
        x = self.pool(x)
        if self.fc_norm is not None:
            x = self.fc_norm(x)
        if self.head_drop is not None:
            x = self.head_drop(x)
        if pre_logits or self.head is None:
            return x
        return self.head(x)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.forward_head(self.forward_features(x))

    def adapt_timm_state(self, state: dict[str, Any]) -> dict[str, Any]:
        """What timm's `checkpoint_filter_fn` does to a timm-format ViT state dict when it loads pretrained
        weights (`knifejax.load_timm_weights` calls this before matching keys):

        - `pos_embed` made for another patch grid is resampled to this model's (class token kept, grid resized
          with antialiased bicubic, `knifejax.models.pos_embed`). The checkpoint's grid is taken, as timm, from
          the pretrained configuration's input size divided by the checkpoint's patch size when that accounts
          for every token, else assumed square;
        - a patch-embedding kernel of another patch size is resampled (FlexiViT pseudo-inverse), and an old
          flattened (D, C*p*p) one reshaped to a conv kernel;
        - the `pre_logits` representation layer of old checkpoints is dropped.

        Anything that cannot be adapted is passed through unchanged, so `load_timm_weights` reports it. Values are
        arrays or lazy checkpoint entries (shape and dtype known, read by `np.asarray`): only what is adapted is
        read here.
        """
        d, p = self.num_features, self.patch_size
        in_chans = self.patch_embed.proj.weight.shape[2]
        ckpt_patch = state.get("patch_embed.proj.weight")
        out = {}
        for key, value in state.items():
            if "pre_logits" in key:
                continue
            if key == "patch_embed.proj.weight":
                if value.ndim < 4 and value.size == d * in_chans * p * p:
                    value = np.asarray(value).reshape(d, -1, p, p)
                if value.ndim == 4 and tuple(value.shape[-2:]) != (p, p):
                    value = resample_patch_embed(np.asarray(value), (p, p))
            elif key == "pos_embed" and value.ndim == 3:
                value = self._resample_pos_embed(value, ckpt_patch)
            out[key] = value
        return out

    def _resample_pos_embed(self, posemb: np.ndarray, ckpt_patch: np.ndarray | None) -> np.ndarray:
        num_tokens = posemb.shape[1] - self.num_prefix_tokens
        old_size = None  # timm's get_pretrained_grid_size
        if ckpt_patch is not None and ckpt_patch.ndim == 4:
            size = _pair(tuple((self.pretrained_cfg or {}).get("input_size", (3, 224, 224))[-2:]))
            grid = (size[0] // ckpt_patch.shape[-2], size[1] // ckpt_patch.shape[-1])
            old_size = grid if grid[0] * grid[1] == num_tokens else None
        expected = self.pos_embed.shape[1]
        if posemb.shape[1] == expected and (old_size is None or old_size == self.grid_size):
            return posemb
        if old_size is None and math.isqrt(num_tokens) ** 2 != num_tokens:
            return posemb  # grid unknown: load_timm_weights reports the shape mismatch
        return resample_abs_pos_embed(np.asarray(posemb), self.grid_size, old_size, self.num_prefix_tokens)


class ViTArch(NamedTuple):
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    img_size: int
    clip: bool = False  # CLIP image tower: pre-norm, LayerNorm eps 1e-5, no patch-embedding bias


def _vision_transformer(
    arch: ViTArch, *, pretrained_cfg: dict[str, Any], img_size: int | tuple[int, int] | None = None, **kwargs
) -> VisionTransformer:
    """img_size defaults as timm's: the pretrained configuration's input size for fixed-size models (all of
    these; it is the architecture's 224 or 384), else the architecture's. `depth`, `embed_dim` and `num_heads`
    override the architecture's as timm's keywords do (`depth=2`: the variant's blocks, two of them)."""
    arch = arch._replace(**{name: kwargs.pop(name) for name in ("depth", "embed_dim", "num_heads") if name in kwargs})
    if img_size is None:
        input_size = pretrained_cfg.get("input_size")
        img_size = tuple(input_size[-2:]) if pretrained_cfg.get("fixed_input_size") and input_size else arch.img_size
    return VisionTransformer(
        patch_size=arch.patch_size,
        embed_dim=arch.embed_dim,
        depth=arch.depth,
        num_heads=arch.num_heads,
        img_size=img_size,
        pretrained_cfg=pretrained_cfg,
        pre_norm=arch.clip,
        norm_eps=1e-5 if arch.clip else 1e-6,
        **kwargs,
    )


@register_model
def vit_tiny_patch16_224(**kwargs) -> VisionTransformer:
    return _vision_transformer(ViTArch(16, 192, 12, 3, 224), **kwargs)


@register_model
def vit_tiny_patch16_384(**kwargs) -> VisionTransformer:
    return _vision_transformer(ViTArch(16, 192, 12, 3, 384), **kwargs)


@register_model
def vit_small_patch32_224(**kwargs) -> VisionTransformer:
    return _vision_transformer(ViTArch(32, 384, 12, 6, 224), **kwargs)


@register_model
def vit_small_patch32_384(**kwargs) -> VisionTransformer:
    return _vision_transformer(ViTArch(32, 384, 12, 6, 384), **kwargs)


@register_model
def vit_small_patch16_224(**kwargs) -> VisionTransformer:
    return _vision_transformer(ViTArch(16, 384, 12, 6, 224), **kwargs)


@register_model
def vit_small_patch16_384(**kwargs) -> VisionTransformer:
    return _vision_transformer(ViTArch(16, 384, 12, 6, 384), **kwargs)


@register_model
def vit_small_patch8_224(**kwargs) -> VisionTransformer:
    return _vision_transformer(ViTArch(8, 384, 12, 6, 224), **kwargs)


@register_model
def vit_base_patch32_224(**kwargs) -> VisionTransformer:
    return _vision_transformer(ViTArch(32, 768, 12, 12, 224), **kwargs)


@register_model
def vit_base_patch32_384(**kwargs) -> VisionTransformer:
    return _vision_transformer(ViTArch(32, 768, 12, 12, 384), **kwargs)


@register_model
def vit_base_patch16_224(**kwargs) -> VisionTransformer:
    return _vision_transformer(ViTArch(16, 768, 12, 12, 224), **kwargs)


@register_model
def vit_base_patch16_384(**kwargs) -> VisionTransformer:
    return _vision_transformer(ViTArch(16, 768, 12, 12, 384), **kwargs)


@register_model
def vit_base_patch8_224(**kwargs) -> VisionTransformer:
    return _vision_transformer(ViTArch(8, 768, 12, 12, 224), **kwargs)


@register_model
def vit_base_patch16_clip_224(**kwargs) -> VisionTransformer:
    return _vision_transformer(ViTArch(16, 768, 12, 12, 224, clip=True), **kwargs)


@register_model
def vit_base_patch32_clip_224(**kwargs) -> VisionTransformer:
    return _vision_transformer(ViTArch(32, 768, 12, 12, 224, clip=True), **kwargs)
