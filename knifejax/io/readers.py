"""Turn any checkpoint a user has into a flat ``dict[str, numpy.ndarray]``, without torch."""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
from safetensors import SafetensorError, safe_open

from knifejax.io.errors import CheckpointError
from knifejax.io.torch_pickle import LazyTensor, Opaque, open_torch_checkpoint

_TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".pth.tar")
SUPPORTED_SUFFIXES = (".safetensors", ".npz", *_TORCH_SUFFIXES)

# Where training scripts nest the state dict, in the order they are tried.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
# Key prefixes added by DataParallel/DistributedDataParallel and by torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")

# dtypes numpy lacks: safetensors.numpy cannot read them, torch's .numpy() refuses them.
_SAFETENSORS_ML_DTYPES = {
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
}
_TORCH_ML_DTYPES = {
    "torch.bfloat16": np.dtype(ml_dtypes.bfloat16),
    "torch.float8_e4m3fn": np.dtype(ml_dtypes.float8_e4m3fn),
    "torch.float8_e5m2": np.dtype(ml_dtypes.float8_e5m2),
    "torch.float8_e4m3fnuz": np.dtype(ml_dtypes.float8_e4m3fnuz),
    "torch.float8_e5m2fnuz": np.dtype(ml_dtypes.float8_e5m2fnuz),
}
_MAX_LISTED_KEYS = 20


def read_state_dict(source: Mapping[Any, Any] | str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a state dict as ``{name: numpy array}`` from a mapping or a checkpoint file.

    ``source`` is a mapping of names to numpy/jax arrays or torch tensors, or the path of a
    ``.safetensors``, ``.npz`` or ``torch.save`` file (``.pth``, ``.pt``, ``.bin``, ``.ckpt``,
    ``.pth.tar``; zip or legacy format, told apart by content).  A checkpoint that nests the
    state dict under ``state_dict``, ``model_state_dict`` or ``model`` is unwrapped, and a
    ``module.`` or ``_orig_mod.`` prefix shared by every key is stripped.  Torch files are read
    without torch and without running pickled code.  Arrays of an in-memory mapping are not
    copied.  Raises ``CheckpointError`` for anything the user must fix.
    """
    if isinstance(source, Mapping):
        return _state_dict(source, "the given mapping")
    path = Path(source)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    suffix = _suffix(path)
    if suffix == ".safetensors":
        return _state_dict(_read_safetensors(path), str(path))
    if suffix == ".npz":
        return _state_dict(_read_npz(path), str(path))
    if suffix in _TORCH_SUFFIXES:
        with open_torch_checkpoint(path) as tree:
            return _state_dict(tree, str(path))
    raise CheckpointError(
        f"{path}: unknown checkpoint suffix {suffix!r}; supported: {', '.join(SUPPORTED_SUFFIXES)}"
    )


def _suffix(path: Path) -> str:
    """The lower-case suffix, counting timm's ``.pth.tar`` (a plain torch.save file) as one."""
    name = path.name.lower()
    return ".pth.tar" if name.endswith(".pth.tar") else path.suffix.lower()


def _state_dict(tree: Any, origin: str) -> dict[str, np.ndarray]:
    mapping = _unwrap(tree)
    if not isinstance(mapping, Mapping):
        raise CheckpointError(f"{origin}: holds {_describe(tree)}, not a mapping of names to tensors")
    bad = [key for key, value in mapping.items() if not (isinstance(key, str) and _is_array(value))]
    if bad:
        listed = ", ".join(f"{key!r} ({_describe(mapping[key])})" for key in bad[:_MAX_LISTED_KEYS])
        more = f" and {len(bad) - _MAX_LISTED_KEYS} more" if len(bad) > _MAX_LISTED_KEYS else ""
        wrappers = ", ".join(map(repr, _WRAPPER_KEYS))
        raise CheckpointError(
            f"{origin}: not a state dict, these entries are not named tensors: {listed}{more} "
            f"(a state dict nested under one of {wrappers} is found automatically)"
        )
    return _strip_wrapper_prefixes({key: _to_numpy(value) for key, value in mapping.items()})


def _unwrap(tree: Any) -> Any:
    """The state dict a training checkpoint wraps, or ``tree`` itself."""
    if not isinstance(tree, Mapping) or _is_state_dict(tree):
        return tree
    return next((tree[key] for key in _WRAPPER_KEYS if _is_state_dict(tree.get(key))), tree)


def _is_state_dict(value: Any) -> bool:
    return isinstance(value, Mapping) and all(_is_array(item) for item in value.values())


def _is_array(value: Any) -> bool:
    """numpy/jax arrays, torch tensors (duck-typed: torch is never imported) and lazy torch tensors."""
    return isinstance(value, LazyTensor) or (hasattr(value, "__array__") and hasattr(value, "dtype"))


def _is_torch_tensor(value: Any) -> bool:
    return hasattr(value, "detach") and hasattr(value, "cpu")


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, LazyTensor):
        return value.numpy()
    if _is_torch_tensor(value):
        return _torch_tensor_to_numpy(value)
    return np.asarray(value)


def _torch_tensor_to_numpy(tensor: Any) -> np.ndarray:
    """``Tensor.numpy()`` refuses bfloat16 and float8; float32 holds them exactly."""
    tensor = tensor.detach().cpu()
    ml_dtype = _TORCH_ML_DTYPES.get(str(tensor.dtype))
    if ml_dtype is None:
        return tensor.numpy()
    return tensor.float().numpy().astype(ml_dtype)


def _strip_wrapper_prefixes(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Strip ``module.``/``_orig_mod.`` while every key has one (DDP around torch.compile or vice versa)."""
    while arrays:
        prefix = next((p for p in _WRAPPER_PREFIXES if all(key.startswith(p) for key in arrays)), None)
        if prefix is None:
            break
        arrays = {key.removeprefix(prefix): value for key, value in arrays.items()}
    return arrays


def _describe(value: Any) -> str:
    if _is_array(value):
        return "a tensor"
    return repr(value) if isinstance(value, Opaque) else type(value).__name__


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    try:
        with safe_open(path, framework="numpy") as file:
            names = list(file.keys())
            native = {
                name: file.get_tensor(name)
                for name in names
                if file.get_slice(name).get_dtype() not in _SAFETENSORS_ML_DTYPES
            }
    except SafetensorError as error:
        raise CheckpointError(f"{path}: corrupt or truncated safetensors file: {error}") from error
    if len(native) == len(names):
        return native
    extra = _read_safetensors_ml_dtypes(path, [name for name in names if name not in native])
    return {name: native[name] if name in native else extra[name] for name in names}


def _read_safetensors_ml_dtypes(path: Path, names: list[str]) -> dict[str, np.ndarray]:
    """Read tensors of the dtypes ``safetensors.numpy`` lacks straight from the file.

    Layout: an 8-byte little-endian header length, a JSON header giving each tensor's dtype,
    shape and ``data_offsets`` relative to the end of the header, then the data.  ``safe_open``
    has already validated the header against the file size.
    """
    with path.open("rb") as file:
        header_size = int.from_bytes(file.read(8), "little")
        header = json.loads(file.read(header_size))
        arrays = {}
        for name in names:
            info = header[name]
            begin, end = info["data_offsets"]
            file.seek(8 + header_size + begin)
            data = bytearray(file.read(end - begin))
            dtype = _SAFETENSORS_ML_DTYPES[info["dtype"]]
            arrays[name] = np.frombuffer(data, dtype=dtype).reshape(info["shape"])
    return arrays


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                return {name: loaded[name] for name in loaded.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise CheckpointError(f"{path}: corrupt or truncated .npz file: {error}") from error
    raise CheckpointError(f"{path}: a single .npy array, not an .npz archive of named arrays")
