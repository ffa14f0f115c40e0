"""A careless user's mistakes, through the command line: each ends in one `knifejax: error:` line on stderr
naming the place, exit status 2, and nothing written or lost. Argument mistakes are refused before any data is
read or anything compiled, so these stay cheap."""

from __future__ import annotations

import errno
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from knifejax.cli import main as cli_main
from knifejax.data import CsvSource, DataError, validate
from knifejax.data.cache import checksums_path, decode_source, source_fingerprint
from knifejax.data.device_batches import DeviceImages
from knifejax.train.sharding import data_mesh
from knifejax.errors import UserError, reported_errors
from knifejax.train.loop import DivergenceWarning, DivergenceWatch
from knifejax.train.run import RunDir
from tests.cli_errors import refused
from tests.tiny_model import TINY, registered

TRAIN = ["train", "--model", "resnet18", "--epochs", "1", "--image-size", "32", "--no-progress"]


def _fails(capsys, command: list[str] | Callable[[], object], *says: str) -> str:
    """Run the CLI with `command` as its arguments (or call `command`), assert exit 2 and a single error line
    holding each of `says`; return that line."""
    with refused(capsys, *says) as said:
        command() if callable(command) else cli_main(command)
    return said["err"]


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--epochs", "0"], "--epochs must be at least 1, not 0"),
        (["--epochs", "-1"], "--epochs must be at least 1"),
        (["--batch-size", "0"], "--batch-size must be at least 2"),
        (["--batch-size", "1"], "--batch-size must be at least 2"),
        (["--val-fraction", "1.5"], "--val-fraction must be in [0, 1)"),
        (["--lr", "nan"], "--lr must be a finite number, 0 or more, not nan"),
        (["--lr", "-0.1"], "--lr must be a finite number, 0 or more"),
        (["--image-size", "0"], "--image-size must be at least 16 pixels"),
        (["--image-size", "8"], "--image-size must be at least 16 pixels"),
        (["--rotation", "90", "10"], "--rotation MIN MAX"),
        (["--epochs", "abc"], "argument --epochs: invalid int value: 'abc'"),
        (["--optimizer", "adamm"], "argument --optimizer: invalid choice"),
        (["--data-placement", "device", "--hue", "0.1"], "--data-placement device does not implement hue jitter"),
        (["--data-placement", "gpu"], "argument --data-placement: invalid choice"),
        (["--model", "resnet-18"], "unknown model 'resnet-18' (did you mean 'resnet18'?); knifejax.list_models() lists"),
        (["--model", "resnet18.imagenet"], "'resnet18' has no pretrained tag 'imagenet'; timm's tags: a1_in1k"),
    ],
)
def test_bad_training_arguments_are_refused_before_any_work(tmp_path, capsys, flags, says):
    run = tmp_path / "run"
    _fails(capsys, [*TRAIN, "--run", str(run), *flags], says)
    assert not run.exists()


def test_a_run_folder_under_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    _fails(capsys, [*TRAIN, "--run", str(tmp_path / "file" / "run")], "--run", "is a file")


def test_a_run_folder_under_a_link_to_nothing_is_refused(tmp_path, capsys):
    """`runs` linked to a disk that is not mounted: refused before any work, not a FileExistsError at the end."""
    os.symlink(tmp_path / "unmounted", tmp_path / "runs")
    _fails(capsys, [*TRAIN, "--run", str(tmp_path / "runs" / "b0")],
           f"--run: {tmp_path / 'runs'} is a link to {tmp_path / 'unmounted'}, which does not exist")
    assert not (tmp_path / "unmounted").exists()


def test_a_file_given_as_the_cache_folder_is_one_line(tmp_path, capsys):
    (tmp_path / "cache").write_text("not a folder")
    with registered():
        _fails(capsys, [*TRAIN, "--model", TINY, "--run", str(tmp_path / "run"), "--synthetic-classes", "4",
                        "--synthetic-per-class", "4", "--cache-dir", str(tmp_path / "cache")],
               f"cannot write {tmp_path / 'cache'}: a file is where a folder must be")  # fmt: skip
    assert (tmp_path / "cache").read_text() == "not a folder"


def test_a_train_step_larger_than_the_memory_is_one_line_before_the_first_step(tmp_path, capsys, monkeypatch):
    """ViT-S/8 at 224 px, batch 32, fp32 asked XLA for 31 GB on a 24 GB machine: an out-of-memory traceback in the
    middle of the first step. The compiled step's own account of its memory is checked first."""
    from knifejax import memory

    monkeypatch.setattr(memory, "available_ram", lambda: 2**10)  # a machine with 1 KiB free
    run = tmp_path / "run"
    command = [*TRAIN, "--model", TINY, "--run", str(run), "--synthetic-classes", "4", "--synthetic-per-class", "4",
               "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    with registered():
        _fails(capsys, [*command, "--batch-size", "4"],
               f"one train step of {TINY} at 32 px, batch 4, fp32 needs", "over 100% of 0.00 GiB",
               "lower --batch-size, train in bfloat16 (--precision bf16), or use a device with more memory")  # fmt: skip
        monkeypatch.undo()  # the same command with what the message advises trains
        cli_main([*command, "--batch-size", "2", "--max-steps", "1"])
    assert [line["step"] for line in RunDir(run).history()] == [1]


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc, a folder that takes no files")
def test_a_run_folder_on_a_pseudo_filesystem_is_refused(capsys):
    """/proc looks writable to root (its mode bits say so), yet no file can be made there."""
    _fails(capsys, [*TRAIN, "--run", "/proc/knifejax-run"], "--run: /proc takes no new files (")


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("RGB", (20, 20)).save(folder / "a.png")
    return folder


def test_predict_out_naming_a_folder_is_refused_before_predicting(tmp_path, capsys, photos):
    # --run names nothing: the output path is judged before the model is even looked for
    _fails(capsys, ["predict", "--run", str(tmp_path / "none"), str(photos), "--out", str(tmp_path)],
           f"--out {tmp_path} is a folder")


def test_predict_does_not_overwrite_silently(tmp_path, capsys, photos):
    out = tmp_path / "predictions.csv"
    out.write_text("precious\n")
    _fails(capsys, ["predict", "--run", str(tmp_path / "none"), str(photos), "--out", str(out)], "--overwrite")
    assert out.read_text() == "precious\n"


def test_gradcam_out_naming_a_file_is_refused(tmp_path, capsys, photos):
    (tmp_path / "grid.png").write_bytes(b"x")
    _fails(capsys, ["gradcam", "--run", str(tmp_path / "none"), str(photos), "--out", str(tmp_path / "grid.png")],
           "is a file")


def test_gradcam_failed_needs_labels(tmp_path, capsys, photos):
    _fails(capsys, ["gradcam", "--run", str(tmp_path / "none"), str(photos), "--select", "failed"],
           "--select failed needs labelled images")


def test_evaluate_without_a_model_says_how_to_name_one(capsys):
    _fails(capsys, ["evaluate", "--data", "synthetic"], "give either --run DIR")


# --- data mistakes, caught before the first step ------------------------------------------------------------


def _study_set(root: Path, rows: list[str]) -> Path:
    for label in range(4):
        for i in range(3):
            path = root / "Train" / f"Knife_{label}" / f"IMG_{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (24, 24), (40 * label, 30 * i, 7)).save(path)
    csv = root / "train.csv"
    csv.write_text("Id,Label\n" + "\n".join(rows) + "\n")
    return csv


def _rows(overrides: dict[tuple[int, int], str] | None = None) -> list[str]:
    overrides = overrides or {}
    return [f"./Train/Knife_{label}/IMG_{i}.png,{overrides.get((label, i), label)}" for label in range(4) for i in range(3)]


@pytest.mark.parametrize(
    ("rows", "says"),
    [
        (_rows({(2, 1): "99"}), ["row 9:", "the label 99 is outside [0, 4)"]),  # a typo, not a 100-class model
        (_rows({(1, 0): "3_0"}), ["row 5:", "the Label '3_0' is not an integer"]),
        (_rows() + ["./Train/Knife_1/IMG_0.png,1"], ["train data row 14 repeats the image of train data row 5", "--allow-duplicates"]),
        ([], ["no data rows below the header"]),
        (_rows() + ["./Train/Knife_1/IMG\0.png,1"], ["row 14:", "NUL"]),
    ],
    ids=["typo_label", "underscore_label", "duplicate_row", "header_only", "nul_in_path"],
)
def test_data_mistakes_stop_before_training(tmp_path, capsys, rows, says):
    csv = _study_set(tmp_path, rows)
    run = tmp_path / "run"
    err = _fails(capsys, [*TRAIN, "--run", str(run), "--data", str(csv), "--cache-dir", str(tmp_path / "cache")], *says)
    assert str(csv) in err
    assert not run.exists()


def test_folders_name_the_classes_despite_a_typo_label(tmp_path):
    source = CsvSource(_study_set(tmp_path, _rows({(2, 1): "99"})))
    assert source.class_names == ["Knife_0", "Knife_1", "Knife_2", "Knife_3"]
    report = validate(source, skip_bad=True)
    assert [p.row for p in report.problems] == [9] and report.good.size == 11


def test_validation_data_overlapping_training_data_is_refused(tmp_path, capsys):
    csv = _study_set(tmp_path, _rows())
    (tmp_path / "test.csv").write_text("Id,Label\n./Train/Knife_3/IMG_2.png,3\n")
    _fails(capsys, [*TRAIN, "--run", str(tmp_path / "run"), "--data", str(csv), "--val-data", str(tmp_path / "test.csv"),
                    "--cache-dir", str(tmp_path / "cache")], "val data row 2 repeats the image of train data row 13")


def test_a_batch_larger_than_the_data_is_refused_before_the_run_is_written(tmp_path, capsys):
    csv = _study_set(tmp_path, _rows())
    run = tmp_path / "run"
    _fails(capsys, [*TRAIN, "--run", str(run), "--data", str(csv), "--batch-size", "64", "--cache-dir",
                    str(tmp_path / "cache")], "--batch-size 64 is more than the 8 training images")  # 12 less a validation image per class
    assert not run.exists()


def test_a_symlink_loop_file_is_a_bad_file_even_when_skipped(tmp_path):
    rows = _rows() + ["./Train/Knife_0/loop.png,0"]
    csv = _study_set(tmp_path, rows)
    os.symlink("loop.png", tmp_path / "Train" / "Knife_0" / "loop.png")
    report = validate(CsvSource(csv), skip_bad=True)
    assert report.good.size == 12 and "loop.png: cannot read the file" in str(report.problems[0])
    assert source_fingerprint(CsvSource(csv)) is not None  # the cache key of the set names it without resolving it


def test_a_damaged_decode_cache_is_named(tmp_path):
    source = CsvSource(_study_set(tmp_path, _rows()))
    data = decode_source(source, 16, tmp_path / "cache")
    data.path.write_bytes(data.path.read_bytes()[:200])
    damaged = decode_source(source, 16, tmp_path / "cache")
    with pytest.raises(DataError, match=re.escape(str(data.path)) + ".*damaged.*delete the file"):
        damaged.images


def test_damage_inside_a_decode_cache_is_found_by_the_read_that_meets_it(tmp_path):
    """A cache zeroed or flipped where the pixels are, its size and header intact: the checksums saved beside it
    name the first damaged image read, by the host's batches or by the copy to the device; a cache without its
    checksums is decoded again."""
    source = CsvSource(_study_set(tmp_path, _rows()))
    data = decode_source(source, 16, tmp_path / "cache")
    images = data.read(np.arange(len(data))).copy()
    content = bytearray(data.path.read_bytes())
    content[len(content) - 2 * 16 * 16 * 3 + 5] ^= 0x01  # a bit of the last-but-one image
    data.path.write_bytes(bytes(content))
    damaged = decode_source(source, 16, tmp_path / "cache")
    np.testing.assert_array_equal(damaged.read(np.arange(len(data) - 2)), images[:-2])  # the images before it
    with pytest.raises(DataError, match=re.escape(f"{data.path}: image {len(data) - 2} does not match the checksum "
                       "saved with it: the decoded-image cache is damaged; delete it and ")):  # fmt: skip
        damaged.read(np.arange(len(data)))
    with pytest.raises(DataError, match=re.escape(f"{data.path}: image {len(data) - 2} does not match")):
        DeviceImages.place(damaged, data_mesh())
    checksums_path(data.path).unlink()
    rebuilt = decode_source(source, 16, tmp_path / "cache")
    np.testing.assert_array_equal(rebuilt.read(np.arange(len(data))), images)


# --- how the entry points report ------------------------------------------------------------------------------


def test_a_warning_at_an_entry_point_is_one_line_and_the_format_is_restored_after():
    """Python prints a warning through `warnings.formatwarning`; the entry points' context makes it one line."""
    before = warnings.formatwarning
    message = "warning: /run/latest/18 is damaged: ...;\n falling back to step 17"
    with reported_errors():
        shown = warnings.formatwarning(message, UserWarning, "run.py", 214)
    assert shown == "knifejax: warning: /run/latest/18 is damaged: ...; falling back to step 17\n"
    assert warnings.formatwarning is before


def test_interrupt_is_one_line_saying_where_to_resume(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info, reported_errors(on_interrupt=lambda: "the last checkpoint is step 3"):
        raise KeyboardInterrupt
    assert exit_info.value.code == 130
    assert capsys.readouterr().err == "knifejax: interrupted; the last checkpoint is step 3\n"


def test_a_full_disk_deep_inside_a_library_is_one_line(capsys):
    def save():
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/runs/x/checkpoints/latest/12")
        except OSError as error:
            raise ValueError("tensorstore: write failed") from error

    with pytest.raises(SystemExit) as exit_info, reported_errors():
        save()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith("knifejax: error: cannot write /runs/x/checkpoints/latest/12: the disk is full") and err.count("\n") == 1


def test_details_go_to_stdout_and_bugs_keep_their_traceback(capsys):
    error = UserError("2 problems, the first: row 3")
    error.details = ("  row 3: a", "  row 4: b")
    with pytest.raises(SystemExit), reported_errors():
        raise error
    out, err = capsys.readouterr()
    assert out == "  row 3: a\n  row 4: b\n" and err == "knifejax: error: 2 problems, the first: row 3\n"
    with pytest.raises(ZeroDivisionError), reported_errors():
        1 / 0


def test_divergence_is_warned_once_as_a_warning_the_user_can_filter():
    """A `DivergenceWarning` (the entry points print it as one `knifejax: warning:` line on stderr, above), not a
    line on stdout that a library user could neither catch nor silence."""
    watch = DivergenceWatch(1e3, "runs/a: ")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step, loss in enumerate([2.8, 50.0, 400.0, 1e17, np.inf]):
            watch.see(loss, step + 1)
    (warned,) = caught
    assert warned.category is DivergenceWarning
    assert str(warned.message).startswith("runs/a: the training loss grew from 2.8 to 400 by step 3")
    assert "--lr, now 1000" in str(warned.message)


def test_refused_initial_weights_leave_no_run_and_no_warning_behind(tmp_path, capsys):
    """A --weights file that does not fit is refused before the run directory is written (so the same command
    with the right file starts afresh), and its error line comes alone: the classifier it would have dropped is
    not reported for a load that does not happen."""
    from safetensors.numpy import save_file

    weights = tmp_path / "other.safetensors"
    save_file({"fc.weight": np.zeros((3, 8), np.float32), "stem.weight": np.zeros((8, 3, 3, 3), np.float32)}, weights)
    run = tmp_path / "run"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _fails(capsys, [*TRAIN, "--run", str(run), "--synthetic-classes", "4", "--synthetic-per-class", "4", "--batch-size", "4",
                        "--cache-dir", str(tmp_path / "cache"), "--weights", str(weights)],
               f"checkpoint from {weights} does not fit resnet18", "unexpected (1): stem.weight")
    assert [str(w.message) for w in caught if "classifier" in str(w.message)] == []
    assert not run.exists()


EXPERIMENT_SCRIPTS = ("sweep_lr", "sweep_scheduler", "sweep_batch", "compare_optimizers", "transfer_modes",
                      "compare_architectures", "compare_vit", "ensemble", "gradcam")  # fmt: skip


@pytest.mark.parametrize("name", EXPERIMENT_SCRIPTS)
def test_every_experiment_script_reports_a_mistake_in_one_line(tmp_path, capsys, name):
    """The ensembles and Grad-CAM run compare_architectures first: their mistakes too are one line, exit 2, and an
    output folder that cannot be made is refused before any run starts."""
    import importlib

    script = importlib.import_module(f"experiments.{name}")
    out = ["--preset", "smoke", "--no-progress", "--out"]
    _fails(capsys, lambda: script.main([*out, str(tmp_path / "a"), "--epochs", "0"]), "--epochs must be at least 1")
    os.symlink(tmp_path / "unmounted", tmp_path / "runs")
    _fails(capsys, lambda: script.main([*out, str(tmp_path / "runs" / name)]),
           f"--out: {tmp_path / 'runs'} is a link to {tmp_path / 'unmounted'}, which does not exist")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
