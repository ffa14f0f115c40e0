"""A weights folder (`--weights-dir`, for machines without the hub): the file of each model's pretrained weights.

The folder holds `NAME.TAG.safetensors` or `NAME.TAG.pth` per model — e.g. `tf_efficientnet_b0.aa_in1k.safetensors`,
the tag's `model.safetensors` renamed — or is a Hugging Face cache as the hub client leaves it
(`models--timm--NAME.TAG/snapshots/...`). `weights_in_folder` finds a model's file there; `missing_weights_message`
lists every file a set of models still needs and where each comes from.
"""

from __future__ import annotations

import os

from knifejax.models.pretrained import PretrainedUnavailableError, is_packaged_tag
from knifejax.models.registry import get_pretrained_cfg

WEIGHT_FILE_SUFFIXES = (".safetensors", ".pth")


def full_name(model_name: str) -> str:
    """'resnet18' -> 'resnet18.a1_in1k' (the default tag named), 'resnet18.tv_in1k' unchanged."""
    cfg = get_pretrained_cfg(model_name)
    return f"{cfg['architecture']}.{cfg['tag']}"


def weights_in_folder(model_name: str, folder: str | os.PathLike) -> str | None:
    """The file of `model_name`'s pretrained weights in a weights folder, or None when it holds none."""
    name = full_name(model_name)
    for suffix in WEIGHT_FILE_SUFFIXES:
        path = os.path.join(folder, name + suffix)
        if os.path.isfile(path):
            return path
    repo = get_pretrained_cfg(model_name).get("hf_hub_id")
    if repo:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(repo, "model.safetensors", cache_dir=os.fspath(folder))
        if isinstance(cached, str):
            return cached
    return None


def is_packaged(model_name: str) -> bool:
    """Whether `model_name`'s pretrained weights ship in an installed package (available offline)."""
    return is_packaged_tag(full_name(model_name))


def missing_weights_message(model_names: list[str], folder: str | os.PathLike) -> str | None:
    """None when every model's pretrained weights are in `folder` or packaged; else one message naming each
    missing file and where to get it."""
    missing = [m for m in dict.fromkeys(map(full_name, model_names))
               if not is_packaged(m) and weights_in_folder(m, folder) is None]  # fmt: skip
    if not missing:
        return None
    lines = [f"the weights folder {os.fspath(folder)} lacks the pretrained weights of {len(missing)} model(s); "
             "put these files there (either file of each):"]  # fmt: skip
    for name in missing:
        cfg = get_pretrained_cfg(name)
        target = os.path.join(folder, name)
        sources = []
        if cfg.get("hf_hub_id"):
            sources.append(f"{target}.safetensors: model.safetensors of https://huggingface.co/{cfg['hf_hub_id']}")
        if str(cfg.get("url", "")).endswith((".pth", ".pt")):
            sources.append(f"{target}.pth: {cfg['url']}")
        lines.append(f"  {name}:\n    " + "\n    ".join(sources or [f"{target}.safetensors (no public source known)"]))
    return "\n".join(lines)


def weights_file(model_name: str, folder: str | os.PathLike) -> str | None:
    """The file to load `model_name`'s pretrained weights from, given a weights folder: the folder's file, or
    None when they ship in a package. Raises PretrainedUnavailableError naming the file to put there."""
    found = weights_in_folder(model_name, folder)
    if found is not None or is_packaged(model_name):
        return found
    raise PretrainedUnavailableError(missing_weights_message([model_name], folder))
