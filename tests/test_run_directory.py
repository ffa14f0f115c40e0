"""What a run directory guarantees around a kill: one trainer at a time, files that are never torn (and a torn
one from elsewhere read or named), reading that creates nothing."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from knifejax.cli import main as cli_main
from knifejax.train.config import TrainConfig
from knifejax.train.data_setup import _read_verdict
from knifejax.train.run import RunDamagedError, RunDir, RunInUseError, load_run


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
    with pytest.raises(OSError, match="No space"):
        atomic_write.write_text_atomically(target, "new")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


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
    assert "cannot reserve the 2 MiB the decoded-image cache needs" in result.stdout and "--cache-dir" in result.stdout
    assert list((tmp_path / "cache").iterdir()) == []  # no partial file left behind


@pytest.mark.slow
def test_a_full_disk_during_a_checkpoint_save_is_one_line_and_resumable(tmp_path):
    """RLIMIT_FSIZE (SIGXFSZ ignored) lets the config and the decode cache be written, then refuses the first
    checkpoint as a full disk would: tensorstore's error carries the errno only in its text."""
    run = tmp_path / "run"
    script = f"""
import resource, signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (20 << 20, resource.RLIM_INFINITY))
from knifejax.cli import main
main(["train", "--run", {str(run)!r}, "--model", "resnet18", "--synthetic-classes", "4", "--synthetic-per-class", "4",
      "--epochs", "1", "--batch-size", "4", "--image-size", "32", "--no-progress", "--cache-dir", {str(tmp_path / "c")!r}])
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert result.returncode == 2, result.stderr[-3000:]
    # Orbax's own threads print to the same stderr and may share the error line's start with it
    said = [line[line.index("knifejax: error:"):] for line in result.stderr.splitlines() if "knifejax: error:" in line]
    assert len(said) == 1 and "cannot write checkpoint step 0 in" in said[0] and "File too large" in said[0], said
    assert 'knifejax/' not in result.stderr  # no traceback through knifejax's code
    assert RunDir(run).config.exists()  # the run is there to resume once there is room
