"""`pretrained=True` sources: a local file, the Hugging Face cache (the real hub code, on local files), and
the immediate, instructive failure offline."""

import numpy as np
import pytest

import knifejax as kj
from knifejax.models import pretrained
from knifejax.weights import timm_state_dict


def _write_hub_cache(cache_dir, repo_id: str, model) -> None:
    """Lay out `repo_id`'s `model.safetensors` exactly as huggingface_hub caches a download."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = cache_dir / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    kj.save_timm_weights(model, snapshot / "model.safetensors")


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return tmp_path


def test_pretrained_file_overlay_loads_that_file(tmp_path):
    source = kj.create_model("resnet18", seed=5)
    kj.save_timm_weights(source, tmp_path / "w.safetensors")
    model = kj.create_model("resnet18", pretrained=True, pretrained_cfg_overlay={"file": tmp_path / "w.safetensors"})
    assert np.array_equal(timm_state_dict(model)["fc.weight"], timm_state_dict(source)["fc.weight"])


def test_pretrained_tag_loads_from_the_hugging_face_cache(offline_hub):
    source = kj.create_model("resnet18", seed=5)
    _write_hub_cache(offline_hub, "timm/resnet18.tv_in1k", source)
    with pytest.warns(UserWarning, match="classifier keeps its fresh initialisation"):
        model = kj.create_model("resnet18.tv_in1k", pretrained=True, num_classes=192)
    ours, theirs = timm_state_dict(model), timm_state_dict(source)
    assert np.array_equal(ours["layer4.1.bn2.running_var"], theirs["layer4.1.bn2.running_var"])
    assert ours["fc.weight"].shape == (192, 512)
    assert model.pretrained_cfg["tag"] == "tv_in1k" and model.pretrained_cfg["interpolation"] == "bilinear"


def test_unreachable_hub_fails_at_once_saying_how_to_pass_a_file(offline_hub, monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    probes = []

    def unreachable(address, timeout=None, *args, **kwargs):
        probes.append(timeout)
        raise OSError("network unreachable")

    def download(*args, **kwargs):  # would retry for minutes without a network
        raise AssertionError("hf_hub_download must not be tried when the Hub cannot be reached")

    monkeypatch.setattr(pretrained.socket, "create_connection", unreachable)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    with pytest.raises(kj.PretrainedUnavailableError, match="pretrained_cfg_overlay"):
        kj.create_model("efficientnet_b0", pretrained=True)
    assert probes == []  # offline mode: not even a probe
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(kj.PretrainedUnavailableError, match="cannot be reached"):
        kj.create_model("efficientnet_b0", pretrained=True)
    assert len(probes) == 1 and 0 < probes[0] <= 5  # one probe of the endpoint, with a short timeout


def test_lukemelas_names_map_to_timm_by_rule():
    state = {
        "_conv_stem.weight": 1, "_bn0.bias": 2, "_blocks.0._depthwise_conv.weight": 3,
        "_blocks.0._bn1.weight": 4, "_blocks.1._expand_conv.weight": 5, "_blocks.1._bn0.weight": 6,
        "_blocks.2._project_conv.weight": 7, "_blocks.2._bn2.weight": 8, "_conv_head.weight": 9,
        "_bn1.running_var": 10, "_fc.bias": 11, "_blocks.2._expand_conv.weight": 12,
    }
    renamed = pretrained.lukemelas_to_timm(state, [1, 2])
    assert renamed == {
        "conv_stem.weight": 1, "bn1.bias": 2, "blocks.0.0.conv_dw.weight": 3, "blocks.0.0.bn1.weight": 4,
        "blocks.1.0.conv_pw.weight": 5, "blocks.1.0.bn1.weight": 6, "blocks.1.1.conv_pwl.weight": 7,
        "blocks.1.1.bn3.weight": 8, "conv_head.weight": 9, "bn2.running_var": 10, "classifier.bias": 11,
        "blocks.1.1.conv_pw.weight": 12,
    }
    with pytest.raises(kj.CheckpointError, match="block 2 does not exist"):
        pretrained.lukemelas_to_timm({"_blocks.2._bn0.weight": 0}, [1, 1])
