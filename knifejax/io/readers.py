"""Turn any checkpoint a user has into a flat ``dict[str, numpy.ndarray]``, without torch."""

from __future__ import annotations

import functools
import json
import math
import os
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
from safetensors import SafetensorError, safe_open

from knifejax.io.errors import CheckpointError
from knifejax.io.limits import BoundedMember, BoundedZip, Budget
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
_SAFETENSORS_DTYPES = {
    kind: np.dtype(name)
    for kind, name in {
        "F64": "float64", "F32": "float32", "F16": "float16", "I64": "int64", "I32": "int32", "I16": "int16",
        "I8": "int8", "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8", "BOOL": "bool",
    }.items()
}
_TORCH_ML_DTYPES = {
    "torch.bfloat16": np.dtype(ml_dtypes.bfloat16),
    "torch.float8_e4m3fn": np.dtype(ml_dtypes.float8_e4m3fn),
    "torch.float8_e5m2": np.dtype(ml_dtypes.float8_e5m2),
    "torch.float8_e4m3fnuz": np.dtype(ml_dtypes.float8_e4m3fnuz),
    "torch.float8_e5m2fnuz": np.dtype(ml_dtypes.float8_e5m2fnuz),
}
_MAX_LISTED_KEYS = 20


@dataclass(frozen=True)
class TensorEntry:
    """One named tensor of a checkpoint, known by its shape and dtype before any of its bytes are read."""

    shape: tuple[int, ...]
    dtype: np.dtype
    read: Callable[[], np.ndarray]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        array = self.read()
        return array if dtype is None else array.astype(dtype)


class StateDictFile:
    """The tensors of an opened checkpoint: ``entries`` by name, read only on request, within a budget.

    ``read(names)`` materialises the named tensors, refusing (``CheckpointError``) before reading when their
    bytes together pass the file's budget (``knifejax.io.limits``): a tiny file declaring a huge expanded
    tensor, or thousands of names for one storage, costs no more than its header.
    """

    def __init__(self, origin: str, entries: dict[str, TensorEntry], budget: Budget | None) -> None:
        self.origin = origin
        self.entries = entries
        self._budget = budget

    def read(self, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        names = list(self.entries if names is None else names)
        if self._budget is not None:
            self._budget.spend(sum(self.entries[name].nbytes for name in names), f"the {len(names)} tensors read")
        return {name: self.entries[name].read() for name in names}


def read_state_dict(source: Mapping[Any, Any] | str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a state dict as ``{name: numpy array}`` from a mapping or a checkpoint file.

    ``source`` is a mapping of names to numpy/jax arrays or torch tensors, or the path of a
    ``.safetensors``, ``.npz`` or ``torch.save`` file (``.pth``, ``.pt``, ``.bin``, ``.ckpt``,
    ``.pth.tar``; zip or legacy format, told apart by content).  A checkpoint that nests the
    state dict under ``state_dict``, ``model_state_dict`` or ``model`` is unwrapped, and a
    ``module.`` or ``_orig_mod.`` prefix shared by every key is stripped.  Torch files are read
    without torch and without running pickled code.  Arrays of an in-memory mapping are not
    copied.  Raises ``CheckpointError`` for anything the user must fix, and for files that would cost
    more memory than ``knifejax.io.limits`` allows.
    """
    with open_state_dict(source) as state:
        return state.read()


@contextmanager
def open_state_dict(source: Mapping[Any, Any] | str | os.PathLike[str]) -> Iterator[StateDictFile]:
    """Open a state dict as ``read_state_dict`` does, without reading any tensor yet.

    Every tensor's geometry is checked before this yields, so names, shapes and dtypes can be compared with
    a model first; ``StateDictFile.read`` then reads what is needed, inside the ``with`` block.
    """
    if isinstance(source, Mapping):
        yield _state_dict(source, "the given mapping", None)
        return
    path = Path(source)
    if not path.is_file():
        what = "no such checkpoint file" if not path.exists() else "not a regular file"
        raise CheckpointError(f"{path}: {what}")
    suffix = _suffix(path)
    if suffix == ".safetensors":
        with _open_safetensors(path) as state:
            yield state
    elif suffix == ".npz":
        with _open_npz(path) as state:
            yield state
    elif suffix in _TORCH_SUFFIXES:
        with open_torch_checkpoint(path) as tree:
            yield _state_dict(tree, str(path), Budget(path, path.stat().st_size))
    else:
        raise CheckpointError(
            f"{path}: unknown checkpoint suffix {suffix!r}; supported: {', '.join(SUPPORTED_SUFFIXES)}"
        )


def _suffix(path: Path) -> str:
    """The lower-case suffix, counting timm's ``.pth.tar`` (a plain torch.save file) as one."""
    name = path.name.lower()
    return ".pth.tar" if name.endswith(".pth.tar") else path.suffix.lower()


def _state_dict(tree: Any, origin: str, budget: Budget | None) -> StateDictFile:
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
    entries = {key: _entry(value, origin, key) for key, value in mapping.items()}
    return StateDictFile(origin, _strip_wrapper_prefixes(entries), budget)


def _entry(value: Any, origin: str, key: str) -> TensorEntry:
    """A lazy torch tensor, checked now that the pickle is complete; an in-memory array, as it is."""
    if isinstance(value, LazyTensor):
        try:
            value.check()
        except CheckpointError as error:
            raise CheckpointError(f"{origin}: {key!r}: {error}") from error
        return TensorEntry(value.shape, value.dtype, value.numpy)
    array = _to_numpy(value)
    return TensorEntry(array.shape, array.dtype, lambda: array)


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


def _strip_wrapper_prefixes(arrays: dict[str, TensorEntry]) -> dict[str, TensorEntry]:
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


@contextmanager
def _open_safetensors(path: Path) -> Iterator[StateDictFile]:
    """safetensors checks its header against the file's size, so its shapes can be trusted as they are."""
    try:
        with safe_open(path, framework="numpy") as file:
            entries, header = {}, None
            for name in file.keys():
                view = file.get_slice(name)
                kind = view.get_dtype()
                if kind in _SAFETENSORS_ML_DTYPES:
                    header = header or _safetensors_header(path)
                    dtype = _SAFETENSORS_ML_DTYPES[kind]
                    read = functools.partial(_read_ml_dtype_tensor, path, header[0], header[1][name])
                elif kind in _SAFETENSORS_DTYPES:
                    dtype, read = _SAFETENSORS_DTYPES[kind], functools.partial(file.get_tensor, name)
                else:
                    raise CheckpointError(f"{path}: {name!r}: unsupported safetensors dtype {kind}")
                entries[name] = TensorEntry(tuple(view.get_shape()), dtype, read)
            yield StateDictFile(str(path), _strip_wrapper_prefixes(entries), Budget(path, path.stat().st_size))
    except SafetensorError as error:
        raise CheckpointError(f"{path}: corrupt or truncated safetensors file: {error}") from error


def _read_ml_dtype_tensor(path: Path, header_size: int, info: dict) -> np.ndarray:
    """Read a tensor of a dtype ``safetensors.numpy`` lacks straight from the file, as its header ``info`` says."""
    begin, end = info["data_offsets"]
    with path.open("rb") as file:
        file.seek(8 + header_size + begin)
        data = bytearray(file.read(end - begin))
    return np.frombuffer(data, dtype=_SAFETENSORS_ML_DTYPES[info["dtype"]]).reshape(info["shape"])


def _safetensors_header(path: Path) -> tuple[int, dict]:
    """(size, parsed JSON) of a file's header. Layout: an 8-byte little-endian header length, a JSON header giving
    each tensor's dtype, shape and ``data_offsets`` relative to the end of the header, then the data; ``safe_open``
    has already validated it against the file's size."""
    with path.open("rb") as file:
        header_size = int.from_bytes(file.read(8), "little")
        return header_size, json.loads(file.read(header_size))


@contextmanager
def _open_npz(path: Path) -> Iterator[StateDictFile]:
    """An ``.npz`` read member by member, each header parsed before its data, all against the file's budget.

    ``numpy.load`` would allocate whatever a member's header declares and inflate whatever it holds, so a
    1 MB compressed archive could take gigabytes; ``BoundedZip`` counts what really comes out.
    """
    with path.open("rb") as file:
        if not zipfile.is_zipfile(file):
            file.seek(0)
            single = file.read(6) == b"\x93NUMPY"
            what = "a single .npy array, not an .npz archive of named arrays" if single else "not a zip archive"
            raise CheckpointError(f"{path}: {what}")
        file.seek(0)
        archive = BoundedZip(path, file)
        with archive.archive:
            entries = {}
            for member in archive.names():
                with archive.open(member) as stream:
                    shape, dtype, _ = _npy_header(archive.path, stream)
                read = functools.partial(_read_npy, archive, member)
                entries[member.removesuffix(".npy")] = TensorEntry(shape, dtype, read)
            yield StateDictFile(str(path), _strip_wrapper_prefixes(entries), Budget(path, path.stat().st_size))


def _npy_header(path: Path, stream: BoundedMember) -> tuple[tuple[int, ...], np.dtype, bool]:
    """``(shape, dtype, fortran_order)`` of the ``.npy`` array ``stream`` starts with, leaving it at the data."""
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except ValueError as error:
        raise CheckpointError(f"{path}: member {stream.name!r} is not a readable .npy array: {error}") from error
    if dtype.hasobject:
        raise CheckpointError(f"{path}: member {stream.name!r} holds Python objects, not numbers; refused")
    return tuple(shape), dtype, fortran


def _read_npy(archive: BoundedZip, member: str) -> np.ndarray:
    with archive.open(member) as stream:
        shape, dtype, fortran = _npy_header(archive.path, stream)
        data = bytearray(stream.read_exactly(math.prod(shape) * dtype.itemsize))
    if fortran:
        return np.ascontiguousarray(np.frombuffer(data, dtype=dtype).reshape(shape[::-1]).T)
    return np.frombuffer(data, dtype=dtype).reshape(shape)
