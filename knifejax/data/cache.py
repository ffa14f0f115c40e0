"""Decode-once cache: every image of a source decoded, resized to the training size and kept as uint8.

The study's transforms start with `Resize((S, S))` on the decoded image, so caching the resized image is
exact: the augmentations that follow see the same pixels as if each file were decoded every epoch, while
the files are decoded once. A 10k-image set at 224 px is 1.5 GB; on disk it is one `.npy` file that
data-loader workers map into memory instead of receiving a copy.

The file's name is a fingerprint of the source (paths, sizes and modification times of its files, or
the synthetic set's parameters) and the size, so a changed dataset is decoded again, never served stale.
A half-written cache is never used: it is written under a temporary name and renamed when complete.
`check_and_decode` fills it in the pass that checks the files (`knifejax.data.validate`), so a first start
decodes each file once.

Each image's CRC-32 is computed as it is decoded and kept beside the cache (`<name>.crc32.npy`, written
before the cache is renamed into place); every read (`DecodedImages.read`) checks the images it reads, so
damage is found in the pass that reads the images anyway, never by a second pass over the file. A cache
without its checksums (from an earlier knifejax, or half-deleted) is decoded again.
"""

from __future__ import annotations

import hashlib
import io
import os
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grain
import numpy as np
from PIL import Image

from knifejax.atomic_write import write_bytes_atomically
from knifejax.data.errors import DataError
from knifejax.data.sources import Subset
from knifejax.data.validate import ItemCheck, ValidationReport, collect
from knifejax.data.workers import allow_grain_workers
from knifejax.errors import UserError

DEFAULT_CACHE_DIR = Path(os.environ.get("KNIFEJAX_CACHE", Path.home() / ".cache" / "knifejax")) / "decoded"


def source_fingerprint(source: Any) -> str | None:
    """A stable hex digest that changes when any image or label of `source` may have changed, or None
    for a source that cannot say (it is then cached in memory only)."""
    h = hashlib.sha256()
    if hasattr(source, "fingerprint"):
        h.update(str(source.fingerprint).encode())
    elif hasattr(source, "indices") and hasattr(source, "source"):  # a Subset
        parent = source_fingerprint(source.source)
        if parent is None:
            return None
        h.update(parent.encode())
        h.update(np.asarray(source.indices, np.int64).tobytes())
    elif hasattr(source, "paths"):
        for path in source.paths:
            h.update(_file_key(Path(path)).encode())
    else:
        return None
    h.update(np.asarray(source.labels, np.int64).tobytes())
    return h.hexdigest()[:24]


def _file_key(path: Path) -> str:
    """Where a file is and which version of it: its resolved path, size and time (the path as given where it names
    nothing that can be resolved: a NUL in the name, a symlink loop; validation reports those)."""
    try:
        stat = path.stat()
        return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n"
    except (OSError, ValueError, RuntimeError):
        return f"{path}|-|-\n"


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """torchvision `Resize((size, size))` on a PIL image: bilinear with PIL's antialiasing, aspect ignored."""
    if image.shape[:2] == (size, size):
        return np.ascontiguousarray(image)
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))


def _allocated_memmap(partial: Path, shape: tuple[int, ...]) -> np.ndarray:
    """A new .npy memory map whose blocks are reserved on disk first: a full disk is then an error here, not a
    SIGBUS on some later page write (the file would otherwise be sparse)."""
    needed = 128 + int(np.prod(shape))  # the .npy header takes at most 128 bytes here
    try:
        array = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=shape)
        with partial.open("r+b") as file:
            os.posix_fallocate(file.fileno(), 0, partial.stat().st_size)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise CacheSpaceError(
            f"{partial.parent}: cannot reserve the {needed / 2**20:.2f} MiB the decoded-image cache needs "
            f"({error.strerror}); free space there, or give --cache-dir a folder with room (or `--cache-dir none` to "
            "keep the images in memory)"
        ) from error
    return array


def _remove_stale_partials(path: Path) -> None:
    """Partial cache files of processes that no longer run (killed while decoding)."""
    for partial in path.parent.glob(f"{path.stem}.*.partial.npy"):
        pid = partial.name[len(path.stem) + 1 :].split(".")[0]
        if pid.isdigit() and not _alive(int(pid)):
            partial.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class CacheSpaceError(UserError, OSError):
    """The decoded-image cache does not fit on its disk."""


def checksums_path(path: Path) -> Path:
    """Where the per-image CRC-32s of the cache file `path` are kept."""
    return path.with_name(f"{path.stem}.crc32.npy")


def _crc32(image: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(image).reshape(-1))


class DecodedImages:
    """The images of a source as one uint8 array (N, size, size, 3), and its labels.

    Pickles as its file path when it lives on disk, so worker processes open the same memory map.
    """

    def __init__(self, labels: np.ndarray, class_names: list[str], size: int, path: Path | None, array=None):
        self.labels = np.asarray(labels, np.int64)
        self.class_names = list(class_names)
        self.size = size
        self.path = path
        self._array = array
        self._checksums: np.ndarray | None = None

    def read(self, items) -> np.ndarray:
        """`images[items]` (an index or an index array), each image read checked against its checksum."""
        images = self.images[items]
        if self.path is not None:
            indices = np.atleast_1d(np.arange(len(self))[items])
            for index, image in zip(indices, images.reshape(-1, *images.shape[-3:])):
                if _crc32(image) != self._checksums[index]:
                    raise DataError(
                        f"{self.path}: image {index} does not match the checksum saved with it: the decoded-image "
                        f"cache is damaged; delete it and {checksums_path(self.path).name} beside it, then run the "
                        "same command again, which decodes the images anew"
                    )
        return images

    @property
    def images(self) -> np.ndarray:
        if self._array is None:
            self._array = self._open_cache()
        return self._array

    def _open_cache(self) -> np.ndarray:
        """The cache file as a memory map, after checking it holds exactly this set's images, and its checksums."""
        expected = (len(self.labels), self.size, self.size, 3)
        try:
            array = np.load(self.path, mmap_mode="r", allow_pickle=False)
            checksums = np.load(checksums_path(self.path), allow_pickle=False)
        except (OSError, ValueError, EOFError) as error:
            raise DataError(
                f"{self.path}: the decoded-image cache is damaged ({error}); delete the file and run the same "
                "command again, which decodes the images anew"
            ) from error
        if array.shape != expected or array.dtype != np.uint8 or checksums.shape != expected[:1]:
            raise DataError(
                f"{self.path}: the decoded-image cache holds {array.dtype} {array.shape} with {checksums.shape[0]} "
                f"checksums, not uint8 {expected} with {expected[0]}; delete the file and run the same command again, "
                "which decodes the images anew"
            )
        self._checksums = checksums
        return array

    def __len__(self) -> int:
        return len(self.labels)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if self.path is not None:
            state["_array"] = state["_checksums"] = None
        return state


def decode_source(
    source: Any,
    size: int,
    cache_dir: str | os.PathLike[str] | None = DEFAULT_CACHE_DIR,
    workers: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> DecodedImages:
    """Decode and resize every image of `source` once (in `workers` processes), or reuse the cached file.

    `cache_dir=None` keeps the array in memory. The source should have been checked with
    `knifejax.data.validate` first (or use `check_and_decode`, which checks as it decodes): a file that fails to
    decode here raises its `DataError`.
    """
    path = cache_path(source, size, cache_dir)
    if path is not None and path.exists() and checksums_path(path).exists():
        return DecodedImages(source.labels, source.class_names, size, path)
    cache = _CacheFile(path, len(source), size)
    try:
        for index, image in enumerate(_in_order(_DecodeResized(source, size), len(source), workers)):
            cache.append(image)
            if progress is not None:
                progress(index + 1, len(source))
        return cache.finish(path, source)
    finally:
        cache.discard()


def check_and_decode(
    source: Any,
    num_classes: int,
    size: int,
    cache_dir: str | os.PathLike[str] | None = DEFAULT_CACHE_DIR,
    workers: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[ValidationReport, Any, DecodedImages]:
    """`validate` (with `skip_bad`) and `decode_source` in one pass over the files, each decoded once: (the
    report, the checked source -- `source`, or the `Subset` of its good items -- and its decoded images, cached
    as `decode_source` would cache them). A first start of a training run needs both; decoding a camera photo
    costs far more than resizing it."""
    cache = _CacheFile(cache_path(source, size, cache_dir), len(source), size)
    try:
        results = _in_order(_CheckedResized(ItemCheck(source, num_classes), size), len(source), workers)
        report = collect(source, results, skip_bad=True, progress=progress, keep=cache.append)
        checked = source if report.num_bad == 0 else Subset(source, report.good)
        return report, checked, cache.finish(cache_path(checked, size, cache_dir), checked)
    finally:
        cache.discard()


def cache_path(source: Any, size: int, cache_dir: str | os.PathLike[str] | None) -> Path | None:
    """Where the decoded images of `source` at `size` px are cached (None: kept in memory)."""
    fingerprint = source_fingerprint(source)
    if cache_dir is None or fingerprint is None:
        return None
    return Path(cache_dir) / f"{fingerprint}-{size}px.npy"


class _CacheFile:
    """A cache being written: images appended in order with their CRC-32s, into a partial file beside `path` (in
    memory when `path` is None) of room for `capacity` images; `finish` puts it in place."""

    def __init__(self, path: Path | None, capacity: int, size: int):
        self.size, self.count = size, 0
        self.checksums = np.empty(capacity, np.uint32)
        self.partial = None
        if path is None:
            self.array = np.empty((capacity, size, size, 3), np.uint8)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            _remove_stale_partials(path)
            self.partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.npy")
            self.array = _allocated_memmap(self.partial, (capacity, size, size, 3))

    def append(self, image: np.ndarray) -> None:
        self.array[self.count] = image
        self.checksums[self.count] = _crc32(image)
        self.count += 1

    def finish(self, path: Path | None, source: Any) -> DecodedImages:
        """The images appended, as the cache of `source` at `path` (which, for a `check_and_decode` that left
        items out, names the checked subset: its images are then copied into a file of their number)."""
        if path is None:
            return DecodedImages(source.labels, source.class_names, self.size, None, self.array[: self.count])
        if self.count < len(self.array):
            whole, whole_partial = self.array, self.partial
            self.partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.npy")
            self.array = _allocated_memmap(self.partial, (self.count, self.size, self.size, 3))
            self.array[:] = whole[: self.count]
            del whole
            whole_partial.unlink()
        self.array.flush()
        self.array = None
        saved = io.BytesIO()
        np.save(saved, self.checksums[: self.count])
        write_bytes_atomically(checksums_path(path), saved.getvalue())
        os.replace(self.partial, path)
        self.partial = None
        return DecodedImages(source.labels, source.class_names, self.size, path)

    def discard(self) -> None:
        """Remove the partial file of a cache that was not finished (an error, or an interruption)."""
        self.array = None
        if self.partial is not None:
            self.partial.unlink(missing_ok=True)


class _DecodeResized:
    """Picklable `index -> resized image` for grain workers."""

    def __init__(self, source: Any, size: int):
        self.source = source
        self.size = size

    def __call__(self, index: int) -> np.ndarray:
        return resize_square(self.source[index]["image"], self.size)


class _CheckedResized:
    """Picklable `index -> (problems, resized image or None)` for grain workers: only the resized image leaves
    the worker."""

    def __init__(self, check: ItemCheck, size: int):
        self.check = check
        self.size = size

    def __call__(self, index: int) -> tuple[list[str], np.ndarray | None]:
        problems, image = self.check(index)
        return problems, None if image is None else resize_square(image, self.size)


def _in_order(function: Callable[[int], Any], count: int, workers: int):
    """`function(0), function(1), ...`, computed in `workers` processes (0: here)."""
    dataset = grain.MapDataset.range(count).map(function).to_iter_dataset()
    if workers > 0:
        allow_grain_workers()
        dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
    return iter(dataset)
