"""Read ``torch.save`` files without importing torch and without running pickled code.

A PyTorch checkpoint is a pickle whose tensors point, through *persistent ids*, at raw storages
kept outside the pickle.  Two layouts exist:

* the zip format (torch >= 1.6): ``<prefix>/data.pkl`` holds the pickle, ``<prefix>/data/<key>``
  the raw bytes of each storage and ``<prefix>/byteorder`` (optional) their byte order;
* the legacy format (``_use_new_zipfile_serialization=False``): five things in a row -- a magic
  number pickle, a protocol version pickle, a sys-info pickle, the main pickle, a pickle listing
  the storage keys -- then, for each key in that order, an int64 little-endian *element* count
  followed by that many elements of raw little-endian data.

The unpickler resolves globals only to the small allowlist in ``_SAFE_GLOBALS`` (our own tensor
reconstructors, not torch's); every other global -- ``argparse.Namespace`` in a timm training
checkpoint or ``os.system`` in a malicious file alike -- becomes an inert ``Opaque`` class that only
records how the pickle tried to build it.  Tensors come back as ``LazyTensor`` records that are
read into numpy arrays on demand with ``LazyTensor.numpy()``.

A hostile file can also try to *change* what it built: pickle's BUILD opcode writes into any object's
``__dict__`` (frozen dataclasses included) or calls its ``__setstate__`` -- numpy's dtype objects accept
one that rewrites their item size, process-wide.  So the pickle never sees a numpy object: dtypes are
names, and every record it can reach (``LazyTensor``, ``Storage``, storage types, dtypes) refuses BUILD.
A tensor's geometry is checked by ``LazyTensor.check()`` once the whole pickle has been read, on those
immutable records, and ``numpy()`` reads only bytes that the check proved to lie inside the storage.
Memory is bounded as ``knifejax.io.limits`` states.
"""

from __future__ import annotations

import abc
import collections
import functools
import io
import math
import os
import pickle
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ClassVar

import ml_dtypes
import numpy as np
from numpy.lib.stride_tricks import as_strided

from knifejax.io.errors import CheckpointError
from knifejax.io.limits import MAX_PICKLE_BYTES, BoundedZip, LimitedReader

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO_OPCODE = b"\x80"

# Legacy ``<type>Storage`` classes name the element type of the storage.  ``UntypedStorage`` (used
# by torch >= 2.1 for dtypes without a legacy storage class) is bytes; the tensor dtype then comes
# as an explicit argument of ``_rebuild_tensor_v3``.
_STORAGE_DTYPE_NAMES: dict[str, str] = {
    "DoubleStorage": "float64",
    "FloatStorage": "float32",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128",
    "UntypedStorage": "uint8",
}

# ``torch.<dtype>`` globals, pickled by their canonical name, and the numpy dtype of each.  The pickle
# only ever holds the name (see the module docstring).
_DTYPES: dict[str, np.dtype] = {
    name: np.dtype(dtype)
    for name, dtype in {
        "float64": np.float64,
        "float32": np.float32,
        "float16": np.float16,
        "bfloat16": ml_dtypes.bfloat16,
        "float8_e4m3fn": ml_dtypes.float8_e4m3fn,
        "float8_e5m2": ml_dtypes.float8_e5m2,
        "float8_e4m3fnuz": ml_dtypes.float8_e4m3fnuz,
        "float8_e5m2fnuz": ml_dtypes.float8_e5m2fnuz,
        "int64": np.int64,
        "int32": np.int32,
        "int16": np.int16,
        "int8": np.int8,
        "uint64": np.uint64,
        "uint32": np.uint32,
        "uint16": np.uint16,
        "uint8": np.uint8,
        "bool": np.bool_,
        "complex64": np.complex64,
        "complex128": np.complex128,
    }.items()
}


class Opaque:
    """Inert stand-in for a global outside the allowlist.

    Constructing, calling or restoring it (``__new__``/``__setstate__``/``append``/``__setitem__``,
    the only hooks pickle uses to build objects) only records the arguments, so loading a
    checkpoint never runs code named by the file.
    """

    global_name: ClassVar[str] = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Opaque:
        obj = super().__new__(cls)
        obj.args = args
        obj.kwargs = kwargs
        obj.state = None
        obj.items = []
        return obj

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def append(self, item: Any) -> None:
        self.items.append(item)

    def extend(self, items: Any) -> None:
        self.items.extend(items)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items.append((key, value))

    def __repr__(self) -> str:
        return f"<not loaded: {self.global_name}>"


@functools.lru_cache(maxsize=1024)
def _opaque_class(module: str, name: str) -> type[Opaque]:
    """One ``Opaque`` subclass per global, so its name shows in error messages (bounded cache, as
    a hostile file may name any number of globals)."""
    return type(name, (Opaque,), {"global_name": f"{module}.{name}"})


def _pickled_module_name(obj: Any) -> str | None:
    """The class name when ``obj`` is a whole pickled ``nn.Module`` rather than a state dict."""
    if isinstance(obj, Opaque) and isinstance(obj.state, dict) and "_modules" in obj.state:
        return obj.global_name
    return None


class _Record:
    """A record the pickle builds through our reconstructors: immutable, even to pickle's BUILD opcode.

    BUILD calls ``__setstate__`` when an object has one, and otherwise writes straight into its
    ``__dict__`` (frozen dataclasses included), so this ``__setstate__`` is what keeps a checked record as
    it was checked.  The pickle has no other way to change an object: SETITEM and APPEND need methods
    these records lack.
    """

    def __setstate__(self, state: Any) -> None:
        raise CheckpointError(
            f"the pickle tries to change a {type(self).__name__.lstrip('_')} after building it; "
            "a crafted file, refused"
        )


@dataclass(frozen=True)
class _Dtype(_Record):
    """What a ``torch.<dtype>`` global unpickles to: its name."""

    name: str


@dataclass(frozen=True)
class _StorageType(_Record):
    """What a ``torch.<X>Storage`` global unpickles to: the name of its element dtype."""

    dtype: str


_DTYPE_RECORDS = {name: _Dtype(name) for name in _DTYPES}
_STORAGE_TYPE_RECORDS = {name: _StorageType(dtype) for name, dtype in _STORAGE_DTYPE_NAMES.items()}


@dataclass(frozen=True, eq=False)
class Storage(_Record):
    """A storage named by the pickle: ``numel`` elements of dtype ``dtype`` starting ``offset`` elements
    into the raw storage ``key`` of ``source`` (offset is non-zero only for legacy storage views)."""

    source: _Storages
    key: str
    dtype: str
    numel: int
    offset: int = 0

    @property
    def nbytes(self) -> int:
        return self.numel * _DTYPES[self.dtype].itemsize


@dataclass(frozen=True, eq=False)
class LazyTensor(_Record):
    """A tensor as the pickle describes it: ``check()`` its geometry, then ``numpy()`` reads it from the file."""

    storage: Storage
    dtype_name: str
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    @property
    def dtype(self) -> np.dtype:
        return _DTYPES[self.dtype_name]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    def check(self) -> None:
        """Raise unless the tensor is one torch could have saved: its elements inside its storage.

        Strides are non-negative, and the dimensions of non-zero stride do not overlap (the layout of
        any real view: a slice, a transpose, a permutation).  A zero stride is an expanded dimension
        (``torch.expand``), which reads the same elements again; what that may cost in memory is bounded
        by the reader's budget, never by trusting the shape.
        """
        geometry = f"offset {self.offset}, size {self.shape}, stride {self.stride}"
        if len(self.shape) != len(self.stride) or min((self.offset, *self.shape, *self.stride), default=0) < 0:
            raise CheckpointError(f"invalid tensor geometry: {geometry}")
        if 0 in self.shape:
            return
        extent = 1
        for stride, size in sorted((t, s) for s, t in zip(self.shape, self.stride) if s > 1 and t > 0):
            if stride < extent:
                raise CheckpointError(f"invalid tensor geometry: {geometry} makes elements overlap")
            extent += (size - 1) * stride
        itemsize = self.dtype.itemsize
        first = self.offset * itemsize
        end = first + (1 + sum((n - 1) * s for n, s in zip(self.shape, self.stride))) * itemsize
        if end > self.storage.nbytes:
            raise CheckpointError(
                f"a tensor of shape {self.shape} needs bytes [{first}, {end}) of storage "
                f"'{self.storage.source.entry(self.storage.key)}', which holds {self.storage.nbytes} bytes"
            )

    def numpy(self) -> np.ndarray:
        """A C-contiguous native-byte-order copy of the tensor, honouring offset and strides."""
        self.check()
        storage = self.storage
        itemsize = self.dtype.itemsize
        start = storage.offset * _DTYPES[storage.dtype].itemsize
        buffer = memoryview(storage.source.read(storage.key))[start : start + storage.nbytes]
        span = 0 if 0 in self.shape else 1 + sum((n - 1) * s for n, s in zip(self.shape, self.stride))
        flat = np.frombuffer(buffer, dtype=self.dtype, count=span, offset=self.offset * itemsize)
        view = as_strided(flat, shape=self.shape, strides=[s * itemsize for s in self.stride], writeable=False)
        array = np.array(view, order="C", copy=True)
        if storage.source.big_endian:
            array.byteswap(inplace=True)
        return array


def _as_storage(value: Any) -> Storage:
    if not isinstance(value, Storage):
        raise CheckpointError(f"tensor storage {value!r} does not come from a persistent id")
    return value


def _as_dtype_name(value: Any) -> str:
    if not isinstance(value, _Dtype):
        raise CheckpointError(f"unsupported tensor dtype {value!r}")
    return value.name


def _lazy_tensor(storage: Storage, dtype_name: str, offset: Any, size: Any, stride: Any) -> LazyTensor:
    """The tensor record, its numbers made plain ints; ``LazyTensor.check`` judges them once the pickle is read."""
    try:
        offset, shape, strides = int(offset), tuple(map(int, size)), tuple(map(int, stride))
    except (TypeError, ValueError, OverflowError) as error:
        raise CheckpointError(f"invalid tensor geometry: {error}") from error
    return LazyTensor(storage, dtype_name, offset, shape, strides)


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any) -> LazyTensor:
    storage = _as_storage(storage)
    return _lazy_tensor(storage, storage.dtype, storage_offset, size, stride)


def _rebuild_tensor_v2(
    storage: Any, storage_offset: Any, size: Any, stride: Any, *_grad_hooks_metadata: Any
) -> LazyTensor:
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(
    storage: Any,
    storage_offset: Any,
    size: Any,
    stride: Any,
    _requires_grad: Any,
    _backward_hooks: Any,
    dtype: Any,
    *_metadata: Any,
) -> LazyTensor:
    """torch >= 2.1 for dtypes without a legacy storage class: bytes storage, explicit dtype."""
    return _lazy_tensor(_as_storage(storage), _as_dtype_name(dtype), storage_offset, size, stride)


def _rebuild_parameter(data: Any, *_requires_grad_hooks_state: Any) -> Any:
    """A ``Parameter`` is its data; gradient flags, hooks and Python attributes are dropped."""
    return data


def _rebuild_from_type_v2(func: Callable[..., Any], _new_type: Any, args: tuple, _state: Any) -> Any:
    """Tensor subclasses and tensors with Python attributes: keep the plain tensor.

    ``func`` was itself resolved by ``find_class``, so calling it is safe.
    """
    return func(*args)


def _encode(text: str, encoding: str = "utf-8") -> bytes:
    """Protocol-2 pickles spell ``bytes`` objects as ``_codecs.encode(str, 'latin1')``."""
    if encoding not in ("latin1", "latin-1", "utf-8", "utf8", "ascii"):
        raise CheckpointError(f"unexpected text encoding {encoding!r}")
    return text.encode(encoding)


_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch.tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Size"): tuple,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
    ("_codecs", "encode"): _encode,
}


def _resolve_global(module: str, name: str) -> Any:
    """The only ``find_class``: allowlisted reconstructors, storage types, dtypes, else ``Opaque``."""
    if (module, name) in _SAFE_GLOBALS:
        return _SAFE_GLOBALS[(module, name)]
    if module.split(".")[0] == "torch" and name in _STORAGE_TYPE_RECORDS:
        return _STORAGE_TYPE_RECORDS[name]
    if module == "torch" and name in _DTYPE_RECORDS:
        return _DTYPE_RECORDS[name]
    return _opaque_class(module, name)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, persistent_load: Callable[[Any], Any]) -> None:
        super().__init__(file, encoding="utf-8")
        self._load_persistent = persistent_load

    def find_class(self, module: str, name: str) -> Any:
        return _resolve_global(module, name)

    def persistent_load(self, pid: Any) -> Any:
        return self._load_persistent(pid)


def _no_persistent_ids(pid: Any) -> Any:
    raise CheckpointError(f"unexpected persistent id {pid!r}")


def _unpickle(file: IO[bytes], persistent_load: Callable[[Any], Any], path: Path, what: str) -> Any:
    """Run the restricted unpickler over at most ``MAX_PICKLE_BYTES``, naming the file and part in any error.

    A corrupt pickle can make any builtin it reaches raise, hence the broad ``except``.
    """
    try:
        return _RestrictedUnpickler(LimitedReader(file, MAX_PICKLE_BYTES, path, what), persistent_load).load()
    except CheckpointError as error:
        message = str(error)
        raise CheckpointError(message if message.startswith(str(path)) else f"{path}: {what}: {message}") from error
    except Exception as error:
        raise CheckpointError(
            f"{path}: corrupt or truncated pickle ({what}): {type(error).__name__}: {error}"
        ) from error


def _ascii(value: str | bytes) -> str:
    """Python 2 era files may spell the internal tags as bytes."""
    return value.decode("ascii") if isinstance(value, bytes) else value


class _Storages(abc.ABC):
    """The raw storages of one open checkpoint, shared by all its tensors and read at most once."""

    big_endian = False

    def __init__(self, path: Path) -> None:
        self.path = path
        self.roots: dict[str, Storage] = {}
        self._cache: dict[str, bytes] = {}

    def entry(self, key: str) -> str:
        """How the file names storage ``key``, for error messages."""
        return key

    @abc.abstractmethod
    def _read_bytes(self, key: str) -> bytes:
        """The raw bytes of root storage ``key``: exactly its declared size, or a ``CheckpointError``."""

    def read(self, key: str) -> bytes:
        if key not in self._cache:
            self._cache[key] = self._read_bytes(key)
        return self._cache[key]

    def persistent_load(self, pid: Any) -> Storage:
        """Resolve ``('storage', storage_type, key, location, numel[, view_metadata])``.

        The zip format writes five fields, the legacy format six; a legacy ``('module', cls,
        source_file, source)`` id means a whole ``nn.Module`` was pickled.  A key names one storage:
        declared again with another type or size, it is refused.
        """
        if not isinstance(pid, tuple) or not pid:
            raise CheckpointError(f"unexpected persistent id {pid!r}")
        kind = _ascii(pid[0])
        if kind == "module":
            raise CheckpointError(_whole_model_message(getattr(pid[1], "global_name", repr(pid[1]))))
        if kind != "storage" or len(pid) not in (5, 6):
            raise CheckpointError(f"unsupported persistent id {pid!r}")
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType) or not isinstance(key, (str, bytes)):
            raise CheckpointError(f"unsupported storage in persistent id {pid!r}")
        key, numel = _ascii(key), _plain_int(numel, pid)
        if numel < 0:
            raise CheckpointError(f"invalid storage size in persistent id {pid!r}")
        root = self.roots.setdefault(key, Storage(self, key, storage_type.dtype, numel))
        if (root.dtype, root.numel) != (storage_type.dtype, numel):
            raise CheckpointError(f"storage {key!r} is declared twice, with different types or sizes")
        view = pid[5] if len(pid) == 6 else None
        if view is None:
            return root
        if not isinstance(view, tuple) or len(view) != 3:
            raise CheckpointError(f"invalid storage view in persistent id {pid!r}")
        offset, view_numel = _plain_int(view[1], pid), _plain_int(view[2], pid)
        if min(offset, view_numel) < 0 or offset + view_numel > numel:
            raise CheckpointError(f"invalid storage view in persistent id {pid!r}")
        return Storage(self, key, root.dtype, view_numel, offset)


def _plain_int(value: Any, pid: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise CheckpointError(f"a size in persistent id {pid!r} is not an integer")
    return value


def _whole_model_message(class_name: str) -> str:
    return (
        f"holds a whole pickled nn.Module ({class_name}), not a state dict; knifejax never runs "
        "pickled code, so load it once in PyTorch and save torch.save(model.state_dict(), path)"
    )


class _ZipStorages(_Storages):
    def __init__(self, path: Path, archive: BoundedZip, prefix: str) -> None:
        super().__init__(path)
        self._archive = archive
        self._prefix = prefix
        byteorder_entry = f"{prefix}/byteorder"
        if byteorder_entry in archive:
            byteorder = archive.read(byteorder_entry, limit=16).strip()
            if byteorder not in (b"little", b"big"):
                raise CheckpointError(f"{path}: unknown byte order {byteorder!r}")
            self.big_endian = byteorder == b"big"

    def entry(self, key: str) -> str:
        return f"data/{key}"

    def check(self) -> None:
        """Every storage the pickle names is in the archive, its directory claiming the declared size.

        The claim is only a first check, with a clear message for a damaged file: ``_read_bytes`` counts
        the bytes that really come out.
        """
        for key, root in self.roots.items():
            name = f"{self._prefix}/data/{key}"
            if name not in self._archive:
                raise CheckpointError(f"{self.path}: storage 'data/{key}' is missing from the archive")
            size = self._archive.declared_size(name)
            if size != root.nbytes:
                raise CheckpointError(f"{self.path}: storage 'data/{key}' is {size} bytes, expected {root.nbytes}")

    def _read_bytes(self, key: str) -> bytes:
        return self._archive.read(f"{self._prefix}/data/{key}", size=self.roots[key].nbytes)


class _LegacyStorages(_Storages):
    def __init__(self, path: Path, file: IO[bytes]) -> None:
        super().__init__(path)
        self._file = file
        self._spans: dict[str, tuple[int, int]] = {}

    def locate(self, keys: Any) -> None:
        """Find each storage's bytes; they follow the key list in its order, each after a count.

        The int64 count is in elements of the storage dtype (torch's ``_set_from_file`` multiplies
        it by the element size), and must equal the ``numel`` the pickle declared.
        """
        if (
            not isinstance(keys, list)
            or not all(isinstance(key, (str, bytes)) for key in keys)
            or sorted(map(_ascii, keys)) != sorted(self.roots)
        ):
            raise CheckpointError(f"{self.path}: the storage key list does not match the pickle")
        position = self._file.tell()
        size = os.fstat(self._file.fileno()).st_size
        for key in map(_ascii, keys):
            root = self.roots[key]
            self._file.seek(position)
            header = self._file.read(8)
            if len(header) < 8:
                raise CheckpointError(
                    f"{self.path}: truncated before the element count of storage '{key}'"
                )
            count = int.from_bytes(header, "little", signed=True)
            if count != root.numel:
                raise CheckpointError(
                    f"{self.path}: storage '{key}' is stored with {count} elements, "
                    f"the pickle declares {root.numel}"
                )
            start = position + 8
            if start + root.nbytes > size:
                available = max(size - start, 0)
                raise CheckpointError(
                    f"{self.path}: truncated: storage '{key}' is {available} bytes, expected {root.nbytes}"
                )
            self._spans[key] = (start, root.nbytes)
            position = start + root.nbytes

    def _read_bytes(self, key: str) -> bytes:
        start, nbytes = self._spans[key]
        self._file.seek(start)
        data = self._file.read(nbytes)
        if len(data) != nbytes:
            raise CheckpointError(f"{self.path}: truncated: storage '{key}' is {len(data)} bytes, expected {nbytes}")
        return data


def _zip_prefix(archive: BoundedZip, path: Path) -> str:
    """The archive's top folder: the one holding ``data.pkl`` (named after the file by torch)."""
    pickles = [name for name in archive.names() if name.count("/") == 1 and name.endswith("/data.pkl")]
    if not pickles:
        raise CheckpointError(
            f"{path}: zip archive without <prefix>/data.pkl; not a torch.save checkpoint"
        )
    prefix = pickles[0].rsplit("/", 1)[0]
    if f"{prefix}/constants.pkl" in archive:
        raise CheckpointError(
            f"{path}: a TorchScript archive (torch.jit.save), not a state dict; "
            "save torch.save(model.state_dict(), path) instead"
        )
    return prefix


def _load_zip(path: Path, archive: BoundedZip) -> Any:
    prefix = _zip_prefix(archive, path)
    storages = _ZipStorages(path, archive, prefix)
    pickled = archive.read(f"{prefix}/data.pkl", limit=MAX_PICKLE_BYTES)
    tree = _unpickle(io.BytesIO(pickled), storages.persistent_load, path, "data.pkl")
    storages.check()
    return tree


def _load_legacy(path: Path, file: IO[bytes]) -> Any:
    magic = _unpickle(file, _no_persistent_ids, path, "magic number")
    if magic != MAGIC_NUMBER:
        raise CheckpointError(f"{path}: a pickle, but not a torch.save file (magic number {magic!r})")
    version = _unpickle(file, _no_persistent_ids, path, "protocol version")
    if version != PROTOCOL_VERSION:
        raise CheckpointError(f"{path}: unsupported legacy protocol version {version!r}")
    _unpickle(file, _no_persistent_ids, path, "sys info")
    storages = _LegacyStorages(path, file)
    tree = _unpickle(file, storages.persistent_load, path, "checkpoint")
    storages.locate(_unpickle(file, _no_persistent_ids, path, "storage key list"))
    return tree


@contextmanager
def open_torch_checkpoint(path: Path) -> Iterator[Any]:
    """Yield the object tree of a ``torch.save`` file (zip or legacy), tensors as ``LazyTensor``.

    The format is told by content, not suffix.  Storage sizes are checked before yielding, so a
    truncated file fails here; ``LazyTensor.numpy()`` works only inside the ``with`` block, which
    keeps the file open.
    """
    with path.open("rb") as file:
        head = file.read(len(_ZIP_MAGIC))
        file.seek(0)
        if head == _ZIP_MAGIC:
            archive = BoundedZip(path, file)
            with archive.archive:
                tree = _load_zip(path, archive)
                _reject_whole_model(path, tree)
                yield tree
        elif head.startswith(_PICKLE_PROTO_OPCODE):
            tree = _load_legacy(path, file)
            _reject_whole_model(path, tree)
            yield tree
        else:
            raise CheckpointError(
                f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle)"
            )


def _reject_whole_model(path: Path, tree: Any) -> None:
    class_name = _pickled_module_name(tree)
    if class_name is not None:
        raise CheckpointError(f"{path} {_whole_model_message(class_name)}")
