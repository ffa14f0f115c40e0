"""Crafted and damaged files cannot hurt: every one ends in a one-line error naming the file, in bounded memory,
through every entry point that reads it.

The files are built here from raw pickle opcodes, zip members and PNG chunks (no torch). The loads run in one child
interpreter (`python -m tests.hostile_child`), each under an address-space limit of its current size plus a stated
headroom: a reader that trusted what a file declares would die there with MemoryError (or hang, and meet the
parent's timeout), where a bounded one refuses cleanly. Unit tests of the records' immutability run in-process.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

import knifejax as kj
from knifejax.io import CheckpointError, read_state_dict
from tests.tiny_model import TINY

pytestmark = pytest.mark.usefixtures("tiny_model")

P = pickle
# The checkpoints are offered to the test-only CNN (`tests.tiny_model`, registered in the child too): what is judged
# is the reading of the file, which every model's loading goes through, and the tiny CNN builds in a fraction of
# ResNet-18's time in each of the loads that build one (three per file).
MODEL = TINY
HEAD = "fc.weight"  # the tiny CNN's classifier weight, in its timm key
# Headroom above the child's size while one load runs: generous for what a bounded reader needs, far below what
# the files declare or inflate to (512 MiB to 3 TiB).
HEADROOM_MB = 768
CLI_HEADROOM_MB = 1536


# --- raw pickle opcodes ---------------------------------------------------------------------------------


def _global(module: str, name: str) -> bytes:
    return P.GLOBAL + f"{module}\n{name}\n".encode()


def _str(text: str) -> bytes:
    data = text.encode()
    return P.BINUNICODE + struct.pack("<I", len(data)) + data


def _int(value: int) -> bytes:
    data = pickle.encode_long(value)
    return P.LONG1 + bytes([len(data)]) + data


def _tuple(*items: bytes) -> bytes:
    return P.MARK + b"".join(items) + P.TUPLE


def _dict(**items: bytes) -> bytes:
    return P.EMPTY_DICT + P.MARK + b"".join(_str(k) + v for k, v in items.items()) + P.SETITEMS


def _storage(key: str, numel: int, kind: str = "FloatStorage") -> bytes:
    return _tuple(_str("storage"), _global("torch", kind), _str(key), _str("cpu"), _int(numel)) + P.BINPERSID


def _tensor(key: str, numel: int, offset: int, shape: tuple, stride: tuple) -> bytes:
    ordered_dict = _global("collections", "OrderedDict") + P.EMPTY_TUPLE + P.REDUCE
    args = _tuple(
        _storage(key, numel), _int(offset), _tuple(*map(_int, shape)), _tuple(*map(_int, stride)), P.NEWFALSE,
        ordered_dict,
    )
    return _global("torch._utils", "_rebuild_tensor_v2") + args + P.REDUCE


def _build(obj: bytes, **state: bytes) -> bytes:
    """`obj`, then pickle's BUILD with `state`: what a crafted file does to change a record after it was made."""
    return obj + _dict(**state) + P.BUILD


def _pickle(**entries: bytes) -> bytes:
    return P.PROTO + b"\x02" + _dict(**entries) + P.STOP


def _torch_zip(path: Path, pickled: bytes, storages: dict[str, bytes], compress: bool = False) -> Path:
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", method) as archive:
        archive.writestr("archive/data.pkl", pickled)
        archive.writestr("archive/byteorder", "little")
        for key, data in storages.items():
            archive.writestr(f"archive/data/{key}", data)
    return path


def _legacy(path: Path, pickled: bytes, storages: dict[str, bytes], itemsize: int = 4) -> Path:
    header = b"".join(pickle.dumps(x, protocol=2) for x in (0x1950A86A20F9469CFC6C, 1001, {}))
    tail = b"".join(struct.pack("<q", len(data) // itemsize) + data for data in storages.values())
    path.write_bytes(header + pickled + pickle.dumps(list(storages), protocol=2) + tail)
    return path


def _zeros_member(archive: zipfile.ZipFile, name: str, nbytes: int, prefix: bytes = b"") -> None:
    """A member of `nbytes` (after `prefix`) zeros, compressed as it is written (the archive's method): never
    whole in memory."""
    chunk = bytes(1 << 24)
    with archive.open(name, "w", force_zip64=True) as member:
        member.write(prefix)
        for _ in range(nbytes // len(chunk)):
            member.write(chunk)


def _bomb(path: Path, member: str, pickled: bytes, storage_numel: int = 0) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        if member == "data.pkl":
            _zeros_member(archive, "archive/data.pkl", 1 << 29, prefix=pickled[:-1])
        else:
            archive.writestr("archive/data.pkl", pickled)
            _zeros_member(archive, "archive/data/0", storage_numel * 4)
    return path


def _npz_bomb(path: Path) -> Path:
    header = {"descr": "<f4", "fortran_order": False, "shape": (1 << 27,)}
    buffer = bytearray()

    class _Sink:
        def write(self, data):
            buffer.extend(data)

    np.lib.format.write_array_header_1_0(_Sink(), header)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        _zeros_member(archive, f"{HEAD}.npy", 1 << 29, prefix=bytes(buffer))
    return path


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that declares `width` x `height` RGB pixels with almost no data: a pixel bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(data)
    return path


# --- the crafted checkpoints, one per finding -------------------------------------------------------------


def _crafted_checkpoints(folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, what its error must say besides the file's name)."""
    w = HEAD
    tensor = _tensor("0", 8, 0, (8,), (1,))
    files = {
        "build_stride": (_torch_zip(folder / "build_stride.pth", _pickle(**{w: _build(tensor, stride=_tuple(_int(-1)))}),
                                    {"0": bytes(32)}), "change"),
        "build_offset": (_legacy(folder / "build_offset.pth", _pickle(**{w: _build(tensor, offset=_int(1 << 40))}),
                                 {"0": bytes(32)}), "change"),
        "build_shape": (_torch_zip(folder / "build_shape.pth", _pickle(**{w: _build(tensor, shape=_tuple(_int(1 << 26)))}),
                                   {"0": bytes(32)}), "change"),
        "build_dtype": (_torch_zip(folder / "build_dtype.pth", _pickle(**{w: _build(tensor, dtype=_str("complex128"))}),
                                   {"0": bytes(32)}), "change"),
        "build_dtype_global": (_torch_zip(folder / "build_dtype_global.pth", _pickle(
            **{"x": _build(_global("torch", "bfloat16"), itemsize=_int(64)), w: tensor}), {"0": bytes(32)}), "change"),
        "negative_stride": (_torch_zip(folder / "negative_stride.pth", _pickle(**{w: _tensor("0", 8, 7, (8,), (-1,))}),
                                       {"0": bytes(32)}), "invalid tensor geometry"),
        "stride_zero_huge": (_torch_zip(folder / "stride_zero_huge.pth", _pickle(
            **{w: _tensor("0", 1, 0, (805_000_000,), (0,))}), {"0": bytes(4)}), ""),
        "shape_1e12": (_torch_zip(folder / "shape_1e12.pth", _pickle(**{w: _tensor("0", 10**12, 0, (10**12,), (1,))}),
                                  {"0": bytes(32)}), "expected 4000000000000"),
        "overlap": (_legacy(folder / "overlap.pth", _pickle(**{w: _tensor("0", 8, 0, (1000, 1000), (1, 1))}),
                            {"0": bytes(32)}), "overlap"),
        "bomb_storage": (_bomb(folder / "bomb_storage.pth", "storage", _pickle(**{w: _tensor("0", 1 << 27, 0, (1 << 27,), (1,))}),
                               storage_numel=1 << 27), ""),
        "bomb_pickle": (_bomb(folder / "bomb_pickle.pth", "data.pkl", _pickle(**{w: tensor})), "longer than"),
        "bomb_npz": (_npz_bomb(folder / "bomb_npz.npz"), ""),
    }
    return files


def _nan_checkpoint(folder: Path) -> Path:
    model = kj.create_model(MODEL, num_classes=4, seed=0)
    path = folder / "nan.safetensors"
    kj.save_timm_weights(model, path)
    state = kj.read_state_dict(path)
    state[HEAD][1, 2] = np.nan
    from safetensors.numpy import save_file

    save_file(state, path)
    return path


def _entry_jobs(name: str, path: Path, csv: Path, run: Path) -> list[dict]:
    jobs = [
        ("read_state_dict", [str(path)], HEADROOM_MB),
        ("load_timm_weights", [MODEL, str(path)], HEADROOM_MB),
        ("create_model", [MODEL, str(path)], HEADROOM_MB),
        ("cli", ["evaluate", "--model", MODEL, "--weights", str(path), "--data", str(csv)], CLI_HEADROOM_MB),
        ("cli", ["train", "--run", str(run / name), "--model", MODEL, "--weights", str(path), "--data", str(csv),
                 "--epochs", "1", "--batch-size", "2", "--image-size", "32",
                 "--no-progress", "--cache-dir", str(run / "cache")], CLI_HEADROOM_MB),
    ]
    return [{"id": f"{name}/{entry}/{i}", "entry": entry, "args": args, "headroom_mb": mb}
            for i, (entry, args, mb) in enumerate(jobs)]


def _tiny_csv(folder: Path) -> Path:
    from PIL import Image

    rows = ["Id,Label"]
    for label in range(4):
        for i in range(2):
            relative = f"Train/class{label}/IMG_{i}.png"
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (40, 30), (60 * label, 20 * i, 90)).save(folder / relative)
            rows.append(f"./{relative},{label}")
    (folder / "train.csv").write_text("\n".join(rows) + "\n")
    return folder / "train.csv"


def _run_child(jobs: list[dict], tmp_path: Path, timeout: float) -> dict[str, dict]:
    spec = tmp_path / "jobs.json"
    spec.write_text(json.dumps(jobs))
    proc = subprocess.run([sys.executable, "-m", "tests.hostile_child", str(spec)], capture_output=True, text=True,
                          timeout=timeout, cwd=Path(__file__).parents[1])
    results = {r["id"]: r for r in map(json.loads, filter(None, proc.stdout.splitlines()))}
    missing = [job["id"] for job in jobs if job["id"] not in results]
    assert not missing, f"the child died (exit {proc.returncode}) at {missing[:1]}: {proc.stderr[-3000:]}"
    return results


@pytest.fixture(scope="module")
def checkpoint_results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("crafted")
    data = tmp_path_factory.mktemp("data")
    run = tmp_path_factory.mktemp("runs")
    csv = _tiny_csv(data)
    files = {**_crafted_checkpoints(folder), "nan": (_nan_checkpoint(folder), f"NaN or infinite values in {HEAD}")}
    jobs = [job for name, (path, _) in files.items() for job in _entry_jobs(name, path, csv, run)]
    return files, _run_child(jobs, tmp_path_factory.mktemp("child"), timeout=600), run


FINDINGS = ["build_stride", "build_offset", "build_shape", "build_dtype", "build_dtype_global", "negative_stride",
            "stride_zero_huge", "shape_1e12", "overlap", "bomb_storage", "bomb_pickle", "bomb_npz", "nan"]


@pytest.mark.slow
@pytest.mark.parametrize("finding", FINDINGS)
def test_crafted_checkpoint_is_refused_in_bounded_memory_everywhere(checkpoint_results, finding):
    files, results, run = checkpoint_results
    path, says = files[finding]
    mine = {job_id: result for job_id, result in results.items() if job_id.startswith(f"{finding}/")}
    entries = sorted(job_id.split("/")[1] for job_id in mine)
    assert entries == ["cli", "cli", "create_model", "load_timm_weights", "read_state_dict"]
    for job_id, result in mine.items():
        entry = job_id.split("/")[1]
        if finding == "nan" and entry == "read_state_dict":
            assert result["error"] is None, result  # reading is not loading: the arrays come back as they are
            continue
        if entry == "cli":
            assert result["code"] == 2, (job_id, result)
            lines = result["message"].splitlines()
            assert len(lines) == 1 and lines[0].startswith("knifejax: error: "), (job_id, result)
        else:
            assert result["error"] in ("CheckpointError", "WeightMismatchError", "NonFiniteWeightsError"), (job_id, result)
            assert "\n" not in result["message"], (job_id, result)
        assert str(path) in result["message"] and says in result["message"], (job_id, result)
    assert not (run / finding).exists()  # the failed start wrote nothing


# --- records the pickle cannot change ----------------------------------------------------------------------


@pytest.mark.parametrize("field", ["stride", "offset", "shape", "dtype_name", "storage"])
def test_build_after_the_tensor_is_made_is_refused(tmp_path, field):
    tensor = _tensor("0", 8, 0, (8,), (1,))
    path = _torch_zip(tmp_path / "w.pth", _pickle(w=_build(tensor, **{field: _tuple(_int(-1))})), {"0": bytes(32)})
    with pytest.raises(CheckpointError, match=r"w\.pth.*tries to change a LazyTensor.*crafted"):
        read_state_dict(path)


def test_build_on_a_dtype_leaves_numpy_alone(tmp_path):
    """numpy's dtype objects accept a __setstate__ that rewrites their item size process-wide."""
    import ml_dtypes

    pickled = _pickle(x=_build(_global("torch", "bfloat16"), itemsize=_int(64)), w=_tensor("0", 8, 0, (8,), (1,)))
    with pytest.raises(CheckpointError, match="tries to change a Dtype"):
        read_state_dict(_torch_zip(tmp_path / "w.pth", pickled, {"0": bytes(32)}))
    assert np.dtype(ml_dtypes.bfloat16).itemsize == 2


def test_expanded_views_within_the_budget_still_load(tmp_path):
    """torch.expand saves stride-0 tensors (e.g. a (1, 512) position_ids buffer): real files, kept."""
    pickled = _pickle(ids=_tensor("0", 8, 0, (1, 8), (0, 1)), rows=_tensor("0", 8, 0, (3, 8), (0, 1)))
    arrays = read_state_dict(_torch_zip(tmp_path / "w.pth", pickled, {"0": np.arange(8, dtype=np.float32).tobytes()}))
    np.testing.assert_array_equal(arrays["rows"], np.tile(np.arange(8, dtype=np.float32), (3, 1)))
    assert arrays["ids"].shape == (1, 8)


def test_storage_declared_twice_with_other_sizes_is_refused(tmp_path):
    pickled = _pickle(a=_tensor("0", 8, 0, (8,), (1,)), b=_tensor("0", 1 << 20, 0, (1 << 20,), (1,)))
    with pytest.raises(CheckpointError, match="declared twice"):
        read_state_dict(_torch_zip(tmp_path / "w.pth", pickled, {"0": bytes(32)}))


# --- folders, special files and pixel bombs ---------------------------------------------------------------


@pytest.fixture(scope="module")
def data_results(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("folders")
    cases = {}
    for links in (1, 2):
        folder = root / f"loop{links}"
        (folder / "knife").mkdir(parents=True)
        for i in range(8):
            Image.new("RGB", (8, 8)).save(folder / "knife" / f"{i}.png")
        for j in range(links):
            os.symlink(".", folder / "knife" / f"loop{j}")
        cases[f"loop{links}"] = ("image_folder", folder, str(folder / "knife" / "loop0"))
    special = root / "special"
    (special / "img").mkdir(parents=True)
    os.mkfifo(special / "img" / "fifo.jpg")
    _png_header_only(special / "img" / "bomb.png", 12000, 12000)
    for name, target, says in (("fifo", "./img/fifo.jpg", "FIFO"), ("dev_zero", "/dev/zero", "character device"),
                               ("pixels", "./img/bomb.png", "12000 x 12000 pixels")):
        (special / f"{name}.csv").write_text(f"Id,Label\n{target},0\n")
        cases[name] = ("validate_csv", special / f"{name}.csv", says)
    runs = tmp_path_factory.mktemp("runs")
    jobs = []
    for name, (entry, path, _) in cases.items():
        jobs.append({"id": name, "entry": entry, "args": [str(path)], "headroom_mb": HEADROOM_MB})
        train = ["train", "--run", str(runs / name), "--data", str(path), "--no-progress", "--cache-dir", str(runs / "c")]
        jobs.append({"id": f"{name}/cli", "entry": "cli", "args": train, "headroom_mb": CLI_HEADROOM_MB})
    return cases, _run_child(jobs, tmp_path_factory.mktemp("child"), timeout=300), runs


@pytest.mark.slow
@pytest.mark.parametrize("case", ["loop1", "loop2", "fifo", "dev_zero", "pixels"])
def test_hostile_data_is_a_bad_file_not_a_hang(data_results, case):
    cases, results, runs = data_results
    says = cases[case][2]
    library, cli = results[case], results[f"{case}/cli"]
    assert library["error"] == "DataError" and says in library["message"], library
    assert cli["code"] == 2 and cli["message"].startswith("knifejax: error: ") and cli["message"].count("\n") == 1, cli
    assert says in cli["message"], cli
    assert not (runs / case).exists()


def test_a_symlinked_dataset_folder_is_still_followed(tmp_path):
    from PIL import Image

    elsewhere = tmp_path / "other_disk" / "knife"
    elsewhere.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(elsewhere / "a.png")
    (tmp_path / "data").mkdir()
    os.symlink(elsewhere, tmp_path / "data" / "knife")
    (tmp_path / "data" / ".ipynb_checkpoints").mkdir()
    source = kj.data.ImageFolderSource(tmp_path / "data")
    assert source.class_names == ["knife"] and [p.name for p in source.paths] == ["a.png"]


def test_pixel_limit_is_per_call_and_leaves_pillow_alone(tmp_path):
    from PIL import Image

    from knifejax.data import DataError, load_rgb

    before = Image.MAX_IMAGE_PIXELS
    Image.new("RGB", (40, 30)).save(tmp_path / "a.png")
    with pytest.raises(DataError, match=r"a\.png: 40 x 30 pixels is more than the limit of 1000.*--max-image-pixels"):
        load_rgb(tmp_path / "a.png", max_pixels=1000)
    assert load_rgb(tmp_path / "a.png", max_pixels=1200).shape == (30, 40, 3)
    assert Image.MAX_IMAGE_PIXELS == before


def test_an_image_over_pillows_own_limit_is_one_error_line(tmp_path, capsys):
    """Between Pillow's global limit (89 megapixels) and twice it Pillow only warns; knifejax's per-call limit
    refuses the image, and the command prints that error alone, without Pillow's warning above it."""
    import warnings

    from knifejax.cli import main as cli_main
    from PIL import Image
    from tests.cli_errors import refused

    csv = _tiny_csv(tmp_path)
    _png_header_only(tmp_path / "big.png", 10000, 10000)
    csv.write_text(csv.read_text() + "./big.png,0\n")
    with warnings.catch_warnings(record=True) as caught, refused(capsys, "big.png: 10000 x 10000 pixels"):
        warnings.simplefilter("always")
        cli_main(["train", "--run", str(tmp_path / "run"), "--data", str(csv), "--no-progress", "--cache-dir",
                  str(tmp_path / "cache")])
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
