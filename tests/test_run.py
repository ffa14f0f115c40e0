"""The run directory: exact resume after SIGKILL, the NaN guard, a refused config change, load_run, and the
CLI's evaluate/predict on a trained run."""

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from knifejax.cli import main as cli_main
from knifejax.data import DataError, ImageFolderSource, SyntheticKnives
from knifejax.inference import align_folder_labels
from knifejax.train.checkpoint import Checkpoints
from knifejax.train.config import TrainConfig
from knifejax.train.loop import DivergenceWarning, NonFiniteLossError, fit
from knifejax.train.run import RunDir, load_run
from tests.tiny_model import TINY

pytestmark = pytest.mark.usefixtures("tiny_model")

ROOT = Path(__file__).resolve().parents[1]

# Four epochs of 9 steps: the tiny CNN's run goes on for seconds after the checkpoint the SIGKILL test waits for.
SMALL_RUN = [
    "--model", TINY, "--synthetic-classes", "4", "--synthetic-per-class", "10", "--image-size", "32",
    "--batch-size", "4", "--epochs", "4", "--lr", "1e-3", "--no-progress",
]  # fmt: skip


def _train_command(run: Path, cache: Path, *extra: str) -> list[str]:
    """`python -m knifejax train` with the tiny CNN registered, in the project's root (where `tests` imports)."""
    return [sys.executable, "-m", "tests.tiny_model", "train", "--run", str(run), "--cache-dir", str(cache), *SMALL_RUN,
            *extra]  # fmt: skip


def _model_leaves(run: Path, which: str = "latest") -> list[np.ndarray]:
    model, _, _ = load_run(run, which)
    from flax import nnx

    leaves = jax.tree.leaves(nnx.state(model))
    return [np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x) for x in leaves]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A tiny uninterrupted run, trained in a child process (clean JAX configuration), fed by the host pipeline and
    checkpointed at each epoch's end only."""
    root = tmp_path_factory.mktemp("runs")
    run = root / "reference"
    command = _train_command(run, root / "cache", "--data-placement", "host")
    subprocess.run(command, check=True, timeout=300, cwd=ROOT)
    return run


def _flip_a_bit_of_the_parameters(step: Path) -> None:
    parameters = max((p for p in (step / "model").rglob("d/*")), key=lambda p: p.stat().st_size)
    content = bytearray(parameters.read_bytes())
    content[len(content) // 2] ^= 0x40
    parameters.write_bytes(bytes(content))


@pytest.mark.slow
def test_sigkill_and_resume_on_the_device_ends_bitwise_equal_to_the_host_run(finished_run, tmp_path):
    """Killed mid-epoch with the images on the device, and then a bit of its newest checkpoint flipped: the resumed
    run names the damaged step, falls back to the one before it, and still ends with the host-fed uninterrupted
    run's parameters, bit for bit."""
    run = tmp_path / "killed"
    command = _train_command(run, finished_run.parent / "cache", "--checkpoint-every", "2", "--data-placement", "device")
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and child.poll() is None:
        # A step's folder takes its number only when Orbax renames it, finished, from `N.orbax-checkpoint-tmp`.
        if any(step >= 4 for step in RunDir(run).kept_steps()):  # mid-epoch 1: a checkpoint at step 4 of 9
            break
        time.sleep(0.05)
    assert child.poll() is None, "the run ended before it could be killed"
    child.send_signal(signal.SIGKILL)
    child.wait()
    history_before = (run / "metrics.jsonl").read_text() if (run / "metrics.jsonl").exists() else ""
    assert '"epoch": 3' not in history_before  # killed before the end
    latest = run / "checkpoints" / "latest"
    newest, before = RunDir(run).kept_steps()[::-1][:2]
    _flip_a_bit_of_the_parameters(latest / str(newest))

    said = subprocess.run(command, check=True, timeout=300, capture_output=True, text=True, cwd=ROOT).stdout.splitlines()
    damage = [line for line in said if " is damaged: " in line]
    assert len(damage) == 1 and damage[0].startswith(f"warning: {latest / str(newest)} is damaged: "), said
    assert damage[0].endswith(f"; falling back to step {before}")
    for resumed, reference in zip(_model_leaves(run), _model_leaves(finished_run), strict=True):
        assert resumed.dtype == reference.dtype
        np.testing.assert_array_equal(resumed, reference)
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    reference_lines = [json.loads(line) for line in (finished_run / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [0, 1, 2, 3]
    for line, ref in zip(lines, reference_lines):
        for key in ("step", "lr", "train_loss", "train_map@5", "val_loss", "val_map@5"):
            assert line[key] == ref[key], key


@pytest.mark.slow
def test_load_run_gives_the_trained_model_config_and_classes(finished_run):
    model, cfg, names = load_run(finished_run)
    assert cfg.model == TINY and cfg.epochs == 4
    assert names == SyntheticKnives(4).class_names
    assert model.fc.weight.shape == (8, 4)
    assert model.bn.use_running_average  # eval mode
    assert (finished_run / "curves.png").stat().st_size > 10_000


@pytest.mark.slow
def test_a_changed_recipe_is_refused_not_mixed_into_the_run(finished_run):
    with pytest.raises(ValueError, match=r"lr: 0.001 -> 0.01"):
        fit(TrainConfig.load(finished_run / "config.json").replace(lr=1e-2), finished_run, progress=False)


@pytest.mark.slow
def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    # SGD at lr 1e30 reached through warmup: step 0 has lr 0 (a finite checkpoint), then the loss explodes.
    cfg = TrainConfig(
        model=TINY, synthetic_classes=4, synthetic_per_class=10, image_size=32, batch_size=4, epochs=1,
        optimizer="sgd", lr=1e30, schedule="constant", warmup_steps=1000, checkpoint_every=1,
        cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    with pytest.raises(NonFiniteLossError, match="last good checkpoint"), pytest.warns(DivergenceWarning):
        fit(cfg, tmp_path / "run", progress=False, log=lambda message: None)
    checkpoints = Checkpoints(tmp_path / "run" / "checkpoints" / "latest")
    last = checkpoints.latest_step()
    assert last is not None and last < 9
    from knifejax.train.run import build_model
    from knifejax.train.loop import build_optimizer, checkpoint_trees
    from knifejax.train.steps import init_state

    model = build_model(cfg, 4)
    _, state = init_state(model, build_optimizer(cfg, model, 9))
    trees, _ = checkpoints.restore({"model": checkpoint_trees(state)["model"]})
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(trees["model"]["params"]))


def test_curves_of_short_epochs_are_drawn_at_the_end_with_every_epoch_and_after_each_once_due(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr("knifejax.train.loop.plot_training_curves", lambda history, path, title: drawn.append(len(history)))
    cfg = TrainConfig(model=TINY, synthetic_classes=4, synthetic_per_class=10, image_size=32, batch_size=4, epochs=3,
                      cache_dir=str(tmp_path / "cache"))  # fmt: skip
    fit(cfg, tmp_path / "short", progress=False, log=lambda message: None)
    assert drawn == [3]  # epochs of a fraction of a second: not redrawn after each, drawn whole at the end
    drawn.clear()
    monkeypatch.setattr("knifejax.train.loop.CURVES_EVERY_S", 0.0)  # as when each epoch outlasts the interval
    fit(cfg, tmp_path / "long", progress=False, log=lambda message: None)
    assert drawn == [1, 2, 3]


@pytest.mark.slow
def test_cli_evaluate_and_predict_on_a_run(finished_run, tmp_path, capsys):
    cli_main(["evaluate", "--run", str(finished_run), "--data", "synthetic", "--synthetic-classes", "4",
              "--synthetic-per-class", "10"])  # fmt: skip
    printed = capsys.readouterr().out
    assert "MAP@5" in printed and "MAP@1" in printed and "acc@5" in printed
    map5 = float(printed.split("MAP@5")[1].split()[0])
    assert 0 < map5 <= 1
    with pytest.raises(SystemExit) as exit_info:  # a message to act on, not a traceback
        cli_main(["evaluate", "--run", str(finished_run), "--data", str(tmp_path / "missing.csv")])
    assert exit_info.value.code == 2
    assert re.fullmatch(r"knifejax: error: .*missing\.csv.*\n", capsys.readouterr().err)

    folder = tmp_path / "photos"
    folder.mkdir()
    source = SyntheticKnives(4, 1, size=48, split="test")
    for i in range(len(source)):
        Image.fromarray(source[i]["image"]).save(folder / f"knife_{i}.png")

    repeated = tmp_path / "repeated.csv"  # a row pasted twice would weigh its image double in the score
    repeated.write_text("Id,Label\n" + "".join(f"knife_{i}.png,{i}\n" for i in (0, 1, 2, 3, 1)))
    evaluate = ["evaluate", "--run", str(finished_run), "--data", str(repeated), "--root", str(folder)]
    with pytest.raises(SystemExit) as exit_info:
        cli_main(evaluate)
    assert exit_info.value.code == 2
    said = capsys.readouterr()
    assert "the data row 6 repeats the image of the data row 3; remove the repeated rows, or pass " \
           "--allow-duplicates" in said.err  # fmt: skip
    cli_main([*evaluate, "--allow-duplicates"])
    assert "5 images from" in capsys.readouterr().out
    out = tmp_path / "predictions.csv"
    cli_main(["predict", "--run", str(finished_run), str(folder), "--out", str(out)])
    rows = out.read_text().splitlines()
    assert rows[0].split(",")[:3] == ["path", "class_1", "score_1"]
    assert len(rows) == 1 + len(source)
    scores = [float(x) for x in rows[1].split(",")[2::2]]
    assert scores == sorted(scores, reverse=True) and 0.99 < sum(scores) <= 1.0 + 1e-5  # 4 classes: top-4 sums to 1
    assert set(rows[1].split(",")[1::2][:4]) == set(source.class_names)


def test_an_image_folder_is_relabelled_by_the_models_class_names(tmp_path):
    for name in ("tanto", "bowie"):
        (tmp_path / name).mkdir()
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / name / "a.png")
    source = ImageFolderSource(tmp_path)
    assert source.class_names == ["bowie", "tanto"] and source.labels.tolist() == [0, 1]
    aligned = align_folder_labels(source, ["dagger", "tanto", "bowie"])
    assert aligned.labels.tolist() == [2, 1] and aligned.class_names == ["dagger", "tanto", "bowie"]
    with pytest.raises(DataError, match="not classes of the model"):
        align_folder_labels(ImageFolderSource(tmp_path), ["tanto"])


def test_prepare_data_without_progress_draws_no_bars(tmp_path, capsys):
    from PIL import Image

    from knifejax.train.data_setup import prepare_data

    # A CSV of image files, so that the bar exists: the files are checked and decoded in one pass.
    rows = ["Id,Label"]
    for i in range(6):
        Image.new("RGB", (20, 16), (40 * i, 90, 200)).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,{i % 2}")
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    cfg = TrainConfig(data=str(tmp_path / "train.csv"), val_fraction=0.34, cache_dir=str(tmp_path / "cache"))
    prepare_data(cfg, 16, log=lambda message: None, progress=False)
    assert capsys.readouterr().err == ""
    prepare_data(cfg.replace(cache_dir=str(tmp_path / "cache2")), 16, log=lambda message: None)
    err = capsys.readouterr().err
    assert "checking and decoding train files" in err
