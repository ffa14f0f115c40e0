"""What a run directory guarantees around a kill: one trainer at a time, files that are never torn (and a torn
one from elsewhere read or named), reading that creates nothing; checkpoints whose damage is found, named and
stepped around, and those of the earlier flat-list layout still read."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from knifejax.cli import main as cli_main
from knifejax.data import SyntheticKnives
from knifejax.ensemble import load_member
from knifejax.train.checkpoint import CheckpointDamagedError, CheckpointMismatchError, Checkpoints, _is_key
from knifejax.train.config import TrainConfig
from knifejax.train.data_setup import _read_verdict
from knifejax.train.loop import build_optimizer, checkpoint_trees
from knifejax.train.run import RunDamagedError, RunDir, RunInUseError, build_model, load_run
from knifejax.train.steps import init_state
from tests.run_dirs import save_as_flat_lists
from tests.tiny_model import TINY


def test_a_second_trainer_is_refused_naming_the_holder(tmp_path):
    run = RunDir(tmp_path / "run")
    with run.lock():
        with pytest.raises(RunInUseError, match=f"process {os.getpid()} on {socket.gethostname()}"):
            with RunDir(tmp_path / "run").lock():
                pass
    with RunDir(tmp_path / "run").lock():  # released on exit
        pass


@pytest.mark.slow
def test_a_killed_trainer_leaves_the_run_unlocked(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom knifejax.train.run import RunDir\n"
         f"with RunDir({str(tmp_path / 'run')!r}).lock():\n    print('held', flush=True)\n    time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1],
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunInUseError, match=f"process {holder.pid}"):
            with RunDir(tmp_path / "run").lock():
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with RunDir(tmp_path / "run").lock():
        pass


def _run_with_metrics(tmp_path: Path, text: str) -> RunDir:
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.metrics.write_text(text)
    return run


def test_a_torn_last_metrics_line_is_dropped_and_repaired(tmp_path):
    run = _run_with_metrics(tmp_path, '{"epoch": 0, "val_map@5": 0.5}\n{"epoch": 1, "val_m')
    assert run.history() == [{"epoch": 0, "val_map@5": 0.5}]
    run.append_metrics({"epoch": 1, "val_map@5": 0.6})
    assert run.metrics.read_text() == '{"epoch": 0, "val_map@5": 0.5}\n{"epoch": 1, "val_map@5": 0.6}\n'


def test_a_damaged_metrics_line_before_the_last_is_named(tmp_path):
    run = _run_with_metrics(tmp_path, '{"epoch": 0}\ngarbage\n{"epoch": 2}\n')
    with pytest.raises(RunDamagedError, match=r"metrics.jsonl: line 2 is not JSON"):
        run.history()


def test_a_truncated_config_is_named_through_the_command_line(tmp_path, capsys):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.config.write_text(json.dumps(TrainConfig().to_json())[:40])
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["evaluate", "--run", str(run.path), "--data", "synthetic"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert f"{run.config}: cannot read the run's configuration" in err


def test_reading_a_run_without_checkpoints_creates_nothing(tmp_path):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.config.write_text(json.dumps(TrainConfig(model="resnet18").to_json()))
    run.classes.write_text('["a", "b"]')
    with pytest.raises(FileNotFoundError, match="holds no checkpoint yet"):
        load_run(run.path)
    assert sorted(p.name for p in run.path.iterdir()) == ["classes.json", "config.json"]


def test_a_torn_check_verdict_means_checking_again(tmp_path):
    verdict = tmp_path / "abc-checked-4.json"
    verdict.write_text('{"good": [0, 1, 2], "probl')
    assert _read_verdict(verdict) is None
    verdict.write_text('{"good": [0, 1], "problems": []}')
    assert _read_verdict(verdict) == {"good": [0, 1], "problems": []}
    assert _read_verdict(tmp_path / "missing.json") is None and _read_verdict(None) is None


def test_atomic_writes_leave_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    from knifejax import atomic_write

    target = tmp_path / "config.json"
    target.write_text("old")

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic_write.os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space") as failed:
        atomic_write.write_text_atomically(target, "new")
    assert failed.value.errno == 28 and failed.value.filename == str(target)  # named, for the one-line error
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_writes_give_the_permissions_open_gives(tmp_path, umask):
    """Not the temporary file's owner-only 0o600: a group sharing results reads them when the umask says so."""
    from knifejax.atomic_write import write_text_atomically

    previous = os.umask(umask)
    try:
        write_text_atomically(tmp_path / "atomic.json", "{}")
        (tmp_path / "plain.json").write_text("{}")
    finally:
        os.umask(previous)
    assert (tmp_path / "atomic.json").stat().st_mode == (tmp_path / "plain.json").stat().st_mode == 0o100666 & ~umask


@pytest.mark.slow
def test_a_full_disk_while_caching_is_an_error_not_a_sigbus(tmp_path):
    """RLIMIT_FSIZE with SIGXFSZ ignored makes writes past 1 MiB fail with EFBIG, as a full disk fails with ENOSPC."""
    script = f"""
import resource, signal, sys
from PIL import Image
from knifejax.data import ImageFolderSource
from knifejax.data.cache import CacheSpaceError, decode_source
root = {str(tmp_path / "data")!r}
for label in ("a", "b"):
    import os; os.makedirs(f"{{root}}/{{label}}", exist_ok=True)
    for i in range(20):
        Image.new("RGB", (8, 8)).save(f"{{root}}/{{label}}/{{i}}.png")
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))
try:
    decode_source(ImageFolderSource(root), 128, {str(tmp_path / "cache")!r})
except CacheSpaceError as error:
    print(error)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "cannot reserve the 1.88 MiB the decoded-image cache needs" in result.stdout
    assert "or `--cache-dir none` to keep the images in memory" in result.stdout
    assert list((tmp_path / "cache").iterdir()) == []  # no partial file left behind


@pytest.mark.slow
def test_a_full_disk_during_a_checkpoint_save_is_one_line_and_resumable(tmp_path):
    """RLIMIT_FSIZE (SIGXFSZ ignored) lets the run's small files be written, then refuses the tiny CNN's first
    checkpoint, after step 1 (its largest files about 11 KiB), as a full disk would: tensorstore's error carries the
    errno only in its text. The decoded images stay in memory (`--cache-dir none`: their cache file would be refused
    first), and so do compiled programs (the suite's compile cache is not passed on)."""
    run = tmp_path / "run"
    script = f"""
import resource, signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (8 << 10, resource.RLIM_INFINITY))
from knifejax.cli import main
from tests.tiny_model import TINY, registered
with registered():
    main(["train", "--run", {str(run)!r}, "--model", TINY, "--synthetic-classes", "4", "--synthetic-per-class", "4",
          "--epochs", "1", "--batch-size", "4", "--image-size", "16", "--checkpoint-every", "1", "--no-progress",
          "--cache-dir", "none"])
"""
    env = {key: value for key, value in os.environ.items() if key != "JAX_COMPILATION_CACHE_DIR"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=Path(__file__).parents[1],
                            env=env)  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    # the one line alone: Orbax's log of its threads' failed writes (some 230 lines) is held back
    said = result.stderr.splitlines()
    # which of the run's checkpoints (latest or best) meets the limit first depends on how Orbax lays out its files
    assert len(said) == 1 and re.match(r"knifejax: error: cannot write checkpoint step \d+ in", said[0]), result.stderr
    assert "File too large" in said[0]
    assert RunDir(run).config.exists()  # the run is there to resume once there is room


# --- checkpoints: named, checksummed, two steps of `latest` -----------------------------------------------------


def _tree(seed: int) -> dict:
    """Random bits, which zstd (Orbax compresses arrays) cannot compress: they are stored as they are."""
    return {"params": {"conv": {"weight": jax.random.bits(jax.random.key(seed), (64, 64))}, "fc": {"bias": jnp.arange(8.0)}}}


def _saved_steps(folder: Path, steps: int) -> Checkpoints:
    checkpoints = Checkpoints(folder, max_to_keep=2)
    for step in range(1, steps + 1):
        checkpoints.save(step, {"model": _tree(step)}, {"step": step})
    return checkpoints


def _flip_a_bit(step_folder: Path, values: np.ndarray) -> None:
    """One bit inside the stored bytes of `values`."""
    needle = np.asarray(values).tobytes()
    data = next(p for p in step_folder.rglob("d/*") if p.is_file() and needle in p.read_bytes())
    content = bytearray(data.read_bytes())
    content[content.index(needle) + len(needle) // 2] ^= 0x10
    data.write_bytes(bytes(content))


def test_a_flipped_bit_in_a_checkpoint_is_named_and_the_step_before_is_restored(tmp_path):
    checkpoints = _saved_steps(tmp_path / "latest", 3)
    assert checkpoints.manager.all_steps() == [2, 3]  # the two newest steps are kept
    _flip_a_bit(tmp_path / "latest" / "3", _tree(3)["params"]["conv"]["weight"][:8])
    with pytest.raises(CheckpointDamagedError, match=f"{tmp_path / 'latest' / '3'} is damaged: model array params.conv.weight "
                       "does not match the checksum saved with it"):  # fmt: skip
        checkpoints.restore({"model": _tree(0)})
    said = []
    trees, progress = checkpoints.restore({"model": _tree(0)}, fall_back=said.append)
    assert progress == {"step": 2}
    np.testing.assert_array_equal(trees["model"]["params"]["conv"]["weight"], _tree(2)["params"]["conv"]["weight"])
    assert said == [f"warning: {tmp_path / 'latest' / '3'} is damaged: model array params.conv.weight does not match the "
                    "checksum saved with it (1 of 2 arrays do not); falling back to step 2"]  # fmt: skip
    checkpoints.discard_after(2)  # what a resumed run does before writing step 3 again
    checkpoints.save(3, {"model": _tree(3)}, {"step": 3})
    assert checkpoints.restore({"model": _tree(0)})[1] == {"step": 3}
    checkpoints.close()


@pytest.mark.parametrize("damage", ["truncated metadata", "deleted manifest"])
def test_a_checkpoint_orbax_cannot_read_is_one_line_naming_it(tmp_path, damage):
    checkpoints = _saved_steps(tmp_path / "best", 1)
    model = tmp_path / "best" / "1" / "model"
    if damage == "truncated metadata":
        (model / "_METADATA").write_bytes((model / "_METADATA").read_bytes()[:30])
    else:
        (model / "manifest.ocdbt").unlink()
    with pytest.raises(CheckpointDamagedError) as info:
        checkpoints.restore({"model": _tree(0)})
    assert str(info.value).startswith(f"{tmp_path / 'best' / '1'} is damaged: Orbax cannot read it (")
    assert str(info.value).endswith("delete that folder to go back to the checkpoint before it, if there is one, or "
                                    "train the run again") and "\n" not in str(info.value)  # fmt: skip
    checkpoints.close()


def test_a_renamed_array_is_refused_by_name_not_loaded_in_its_place(tmp_path):
    checkpoints = _saved_steps(tmp_path / "best", 1)
    renamed = {"params": {"conv2": {"weight": jnp.zeros((64, 64), jnp.uint32)}, "fc": {"bias": jnp.zeros(8)}}}
    with pytest.raises(CheckpointMismatchError, match="1 arrays missing \\(first params.conv2.weight\\); 1 arrays unknown "
                       "here \\(first params.conv.weight\\)"):  # fmt: skip
        checkpoints.restore({"model": renamed})
    reshaped = {"params": {"conv": {"weight": jnp.zeros((64, 32), jnp.uint32)}, "fc": {"bias": jnp.zeros(8)}}}
    with pytest.raises(CheckpointMismatchError, match=r"params.conv.weight as uint32 \(64, 64\), but this model has "
                       r"uint32 \(64, 32\)"):  # fmt: skip
        checkpoints.restore({"model": reshaped})
    checkpoints.close()


@pytest.mark.usefixtures("tiny_model")
def test_a_run_in_the_earlier_flat_list_layout_loads_as_it_is(tmp_path):
    """Runs made before checkpoints named their arrays: `load_run` (so evaluate and predict), ensemble members and a
    resume read them without writing anything."""
    cfg = TrainConfig(model=TINY, synthetic_classes=4, image_size=32)
    run = RunDir(tmp_path / "run")
    run.start(cfg)
    run.write_classes(SyntheticKnives(4).class_names)
    model = build_model(cfg, 4, initial_weights=False)
    _, fresh = init_state(model, build_optimizer(cfg, model, 9))
    # values no freshly built model holds, so a restore that loaded nothing would show
    trained = jax.tree.map(lambda x: x + 1 if jnp.issubdtype(x.dtype, jnp.floating) else x, fresh)
    save_as_flat_lists(run.latest, 9, {"model": (trained.params, trained.rest), "optimizer": (trained.opt_state, trained.step)},
                       {"epoch": 1, "batch": 0})  # fmt: skip
    save_as_flat_lists(run.best, 0, {"model": (trained.params, trained.rest)}, {"epoch": 1})
    files_before = sorted(tmp_path.rglob("*"))

    def same(restored, expected) -> None:
        for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(expected), strict=True):
            np.testing.assert_array_equal(jax.random.key_data(a) if _is_key(a) else a, jax.random.key_data(b) if _is_key(b) else b)

    loaded, _, _ = load_run(run.path, "latest")
    same(nnx.split(loaded, nnx.Param, ...)[1:], (trained.params, trained.rest))
    member = load_member(run.path, "best")
    same(nnx.split(member.model, nnx.Param, ...)[1:], (trained.params, trained.rest))
    checkpoints = Checkpoints(run.latest, max_to_keep=2)  # as a resumed run opens it
    trees, progress = checkpoints.restore(checkpoint_trees(fresh))
    checkpoints.close()
    same((trees["model"], trees["optimizer"]), ({"params": trained.params, "rest": trained.rest},
                                                {"opt_state": trained.opt_state, "step": trained.step}))  # fmt: skip
    assert progress == {"epoch": 1, "batch": 0} and sorted(tmp_path.rglob("*")) == files_before


def test_holding_back_orbax_noise_changes_nothing_for_others():
    import logging
    import sys
    from types import SimpleNamespace

    import orbax.checkpoint as ocp

    from knifejax.train.checkpoint import _ABANDONED_WRITES, _orbax_noise_held_back

    before, passed = sys.unraisablehook, []
    closed_loop = SimpleNamespace(exc_value=RuntimeError("Event loop is closed"), exc_traceback=None)
    other = SimpleNamespace(exc_value=ValueError(), exc_traceback=None)
    sys.unraisablehook = passed.append
    try:
        with _orbax_noise_held_back():  # a save that succeeded
            sys.unraisablehook(closed_loop)
            sys.unraisablehook(other)
            failed = logging.makeLogRecord({"msg": "write failed", "levelno": logging.ERROR})
            assert not logging.getLogger("absl").filter(failed)
        assert passed == [other] and sys.unraisablehook == passed.append
        # (an earlier test of this process may have left the abandoned writes' filter: it lets this record through)
        assert logging.getLogger("absl").filter(logging.makeLogRecord({"msg": "later", "levelno": logging.ERROR}))
        with _orbax_noise_held_back() as abandoned:  # a save that failed: its writes finish later
            abandoned()
        sys.unraisablehook(closed_loop)
        sys.unraisablehook(other)
        assert passed == [other, other]
        # a write of the abandoned save failing later, in an Orbax thread: its logged error (and traceback) is
        # dropped; any other record, Orbax's below ERROR included, still passes
        absl, orbax_file = logging.getLogger("absl"), str(Path(ocp.__file__).parent / "_src" / "futures" / "future.py")
        late = {"msg": "_SignalingThread.run() raised an exception", "levelno": logging.ERROR, "pathname": orbax_file}
        assert not absl.filter(logging.makeLogRecord(late))
        assert absl.filter(logging.makeLogRecord({**late, "levelno": logging.INFO}))
        assert absl.filter(logging.makeLogRecord({**late, "pathname": __file__}))
        # an asyncio task of Orbax's loop whose exception nobody retrieved, and the same raised elsewhere
        through, elsewhere = _raised_in(orbax_file), _raised_in(__file__)
        unretrieved = {"msg": "Task exception was never retrieved", "levelno": logging.ERROR, "pathname": __file__}
        asyncio_logger = logging.getLogger("asyncio")
        assert not asyncio_logger.filter(logging.makeLogRecord({**unretrieved, "exc_info": through}))
        assert asyncio_logger.filter(logging.makeLogRecord({**unretrieved, "exc_info": elsewhere}))
        sys.unraisablehook(SimpleNamespace(exc_value=through[1], exc_traceback=through[2]))
        sys.unraisablehook(SimpleNamespace(exc_value=elsewhere[1], exc_traceback=elsewhere[2]))
        assert [r.exc_value for r in passed[2:]] == [elsewhere[1]]
    finally:
        sys.unraisablehook = before
        for name in ("absl", "asyncio"):
            logging.getLogger(name).removeFilter(_ABANDONED_WRITES)


def _raised_in(filename: str) -> tuple:
    """The exc_info of a ValueError raised by code compiled as if it lived in `filename`."""
    try:
        exec(compile("raise ValueError('write failed')", filename, "exec"))
    except ValueError:
        return sys.exc_info()
