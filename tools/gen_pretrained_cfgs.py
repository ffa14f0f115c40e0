"""Write knifejax/models/pretrained_cfgs.json from timm's own pretrained configurations.

Run after registering a new architecture (needs the `test` extra):
    python -m tools.gen_pretrained_cfgs
Every registered architecture gets all of timm's tags, the default tag first, with the fields knifejax
uses (preprocessing, class count, hub location, classifier name).
"""

import json
from pathlib import Path

import knifejax
from knifejax.atomic_write import write_text_atomically
from tests.reference import import_timm

FIELDS = (
    "hf_hub_id", "url", "input_size", "test_input_size", "fixed_input_size", "interpolation", "crop_pct",
    "crop_mode", "mean", "std", "num_classes", "pool_size", "first_conv", "classifier", "license",
)


def pretrained_cfgs(architectures: list[str]) -> dict:
    """{architecture: {"tags": {tag: cfg}}} for the given timm architecture names, default tag first."""
    timm = import_timm()
    from timm.models import _registry

    out = {}
    for arch in architectures:
        if not timm.is_model(arch):
            raise SystemExit(f"{arch} is not a timm model")
        default_tags = list(_registry._model_default_cfgs[arch].tags)
        cfgs = _registry.get_arch_pretrained_cfgs(arch)
        tags = {}
        for tag in default_tags:
            cfg = cfgs[f"{arch}.{tag}" if tag else arch].to_dict()
            tags[tag] = {k: cfg[k] for k in FIELDS if cfg.get(k) is not None}
        out[arch] = {"tags": tags}
    return out


def main() -> None:
    out = pretrained_cfgs(knifejax.list_models())
    path = Path(knifejax.__file__).parent / "models" / "pretrained_cfgs.json"
    write_text_atomically(path, json.dumps(out, indent=1) + "\n")
    print(f"wrote {len(out)} architectures to {path}")


if __name__ == "__main__":
    main()
