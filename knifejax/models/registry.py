"""Model registry: timm's architecture names -> builders, and timm's pretrained configurations.

`create_model("name")` or `create_model("name.tag")` builds a Flax NNX model with `pretrained_cfg`
set exactly as timm sets it for that tag (mean/std, input size, class count, hub id). The configurations
are timm's own, written to `pretrained_cfgs.json` by `tools/gen_pretrained_cfgs.py`.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import Any

from flax import nnx

from knifejax.errors import ConfigError

_BUILDERS: dict[str, Callable[..., nnx.Module]] = {}


def register_model(fn: Callable[..., nnx.Module]) -> Callable[..., nnx.Module]:
    """Register a builder under its function name, which must be the timm architecture name."""
    if fn.__name__ in _BUILDERS:
        raise ValueError(f"model {fn.__name__!r} is registered twice")
    _BUILDERS[fn.__name__] = fn
    return fn


def list_models(pattern: str | None = None) -> list[str]:
    """Registered architecture names (timm spelling), optionally filtered by a shell-style pattern."""
    names = sorted(_BUILDERS)
    return fnmatch.filter(names, pattern) if pattern else names


@cache
def _all_pretrained_cfgs() -> dict[str, Any]:
    text = resources.files("knifejax.models").joinpath("pretrained_cfgs.json").read_text()
    return json.loads(text)


def list_pretrained_tags(architecture: str) -> list[str]:
    """timm's pretrained tags for an architecture, the default one first."""
    entry = _all_pretrained_cfgs()[architecture]
    return list(entry["tags"])


def split_model_name(model_name: str) -> tuple[str, str | None]:
    """'vit_small_patch16_224.dino' -> ('vit_small_patch16_224', 'dino'); no tag -> (name, None)."""
    architecture, _, tag = model_name.partition(".")
    return architecture, tag or None


def get_pretrained_cfg(model_name: str) -> dict[str, Any]:
    """The pretrained configuration timm gives `model_name` (default tag when none is given)."""
    architecture, tag = split_model_name(model_name)
    if architecture not in _BUILDERS:
        close = difflib.get_close_matches(architecture, _BUILDERS, n=1)
        guess = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown model {architecture!r}{guess}; knifejax.list_models() lists the {len(_BUILDERS)} names")
    entry = _all_pretrained_cfgs()[architecture]
    tags = entry["tags"]
    tag = tag or next(iter(tags))
    if tag not in tags:
        raise ConfigError(f"{architecture!r} has no pretrained tag {tag!r}; timm's tags: {', '.join(tags)}")
    return {"architecture": architecture, "tag": tag, **tags[tag]}


def create_model(
    model_name: str,
    pretrained: bool = False,
    *,
    num_classes: int | None = None,
    seed: int = 0,
    pretrained_cfg_overlay: dict[str, Any] | None = None,
    **kwargs: Any,
) -> nnx.Module:
    """Build a registered model, with timm's keyword names.

    num_classes: defaults to the pretrained configuration's class count (1000 for ImageNet tags), as timm.
    pretrained: load the tag's weights (see `knifejax.models.pretrained`); with another `num_classes` the
        classifier stays freshly initialised and a warning says so.
    pretrained_cfg_overlay: entries replacing the configuration's, e.g. `{"file": "weights.safetensors"}` to
        load pretrained weights from a local file as timm does.
    seed: seeds parameter initialisation (and the dropout stream); same seed, same parameters.
    Other keywords go to the family's builder (drop_rate, drop_path_rate, global_pool, img_size, ...).
    """
    cfg = {**get_pretrained_cfg(model_name), **(pretrained_cfg_overlay or {})}
    if num_classes is None:
        num_classes = cfg["num_classes"]
    builder = _BUILDERS[cfg["architecture"]]
    model = builder(num_classes=num_classes, pretrained_cfg=cfg, rngs=nnx.Rngs(seed), **kwargs)
    if pretrained:
        from knifejax.models.pretrained import load_pretrained

        load_pretrained(model)
    return model
