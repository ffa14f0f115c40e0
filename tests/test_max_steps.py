"""`--max-steps`: a run bounded to its first N optimizer steps ends there with its cut epoch evaluated, logged,
checkpointed and tested, resumes exactly, is finished for the runner, and is labelled in tables and the report."""

import json

import jax
import numpy as np
import pytest
from flax import nnx

import knifejax as kj
from experiments import report, runner
from experiments.presets import PRESETS, describe
from knifejax.errors import ConfigError
from knifejax.train.checkpoint import Checkpoints
from knifejax.train.config import TrainConfig
from knifejax.train.loop import fit
from knifejax.train.optim import hyperparameters, scheduled_rate
from knifejax.train.run import RunDir
from tests.tiny_model import TINY

pytestmark = pytest.mark.usefixtures("tiny_model")

# 4 classes x 8 images, batch 4: 8 steps an epoch, 24 in the 3 epochs the schedule spans; the bound, 11, cuts the
# second epoch after 3 of its steps, and the checkpoint every 2 steps leaves one at step 10, just before the end.
BOUNDED = TrainConfig(
    model=TINY, data="synthetic", val_data="synthetic", test_data="synthetic", synthetic_classes=4,
    synthetic_per_class=8, image_size=32, epochs=3, batch_size=4, lr=1e-3, checkpoint_every=2, max_steps=11,
)  # fmt: skip
TIMING = ("train_seconds", "eval_seconds", "images_per_s")


def _untimed(lines):
    return [{k: v for k, v in line.items() if k not in TIMING} for line in lines]


def _leaves(run, which="latest"):
    model, _, _ = kj.load_run(run, which)
    return [np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x)
            for x in jax.tree.leaves(nnx.state(model))]  # fmt: skip


@pytest.fixture(scope="module")
def bounded_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bounded")
    cfg = BOUNDED.replace(cache_dir=str(root / "cache"))
    fit(cfg, root / "reference", progress=False, log=lambda m: None)
    return cfg, root / "reference"


@pytest.mark.slow
def test_a_bounded_run_ends_at_its_bound_with_the_cut_epoch_evaluated(bounded_run):
    cfg, path = bounded_run
    run = RunDir(path)
    lines = run.history()
    assert [(line["epoch"], line["step"]) for line in lines] == [(0, 8), (1, 11)]
    # the schedule spans the 24 steps of the 3 epochs: after update 11 the rate is the cosine's at step 10 of 24
    assert lines[-1]["lr"] == float(scheduled_rate(10, hyperparameters(cfg.lr, "cosine", total_steps=24)))
    assert json.loads(run.test_metrics.read_text())["model"] == "final"
    latest = Checkpoints(run.latest, create=False)
    try:
        assert latest.latest_step() == 11
    finally:
        latest.close()
    kj.load_run(path, "best")
    assert runner.is_finished(path, cfg)
    assert not runner.is_finished(path, cfg.replace(max_steps=None))  # unbounded, the run would have 3 epochs

    said = []
    fit(cfg, path, progress=False, log=said.append)  # the same command again: nothing left to train
    assert run.history() == lines
    assert not any(message.startswith("epoch ") for message in said), said


@pytest.mark.slow
def test_a_bounded_run_killed_before_its_last_save_resumes_to_the_same_end(bounded_run, tmp_path, monkeypatch):
    """Killed after the cut epoch was evaluated and logged but before its checkpoint: the resumed run drops that
    line, trains step 11 again from step 10 and ends bit for bit where the uninterrupted run ended."""
    cfg, reference = bounded_run
    save = Checkpoints.save

    def dies_at_the_last_save(self, step, trees, progress):
        if self.directory.name == "latest" and step == 11:
            raise KeyboardInterrupt
        save(self, step, trees, progress)

    monkeypatch.setattr(Checkpoints, "save", dies_at_the_last_save)
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, tmp_path / "killed", progress=False, log=lambda m: None)
    monkeypatch.setattr(Checkpoints, "save", save)
    killed = RunDir(tmp_path / "killed")
    assert [line["step"] for line in killed.history()] == [8, 11] and not runner.is_finished(killed.path, cfg)

    fit(cfg, killed.path, progress=False, log=lambda m: None)
    assert _untimed(killed.history()) == _untimed(RunDir(reference).history())
    assert killed.test_metrics.read_text() == RunDir(reference).test_metrics.read_text()
    for which in ("latest", "best"):
        for resumed, uninterrupted in zip(_leaves(killed.path, which), _leaves(reference, which), strict=True):
            np.testing.assert_array_equal(resumed, uninterrupted)


@pytest.mark.slow
def test_a_bounded_run_refuses_another_bound(bounded_run):
    cfg, path = bounded_run
    for other in (12, None):
        with pytest.raises(ConfigError, match=f"max_steps: 11 -> {other}"):
            RunDir(path).check_config(cfg.replace(max_steps=other))


def test_max_steps_must_be_positive():
    with pytest.raises(ConfigError, match="--max-steps must be at least 1, not 0"):
        TrainConfig(max_steps=0)


def _finished_looking_run(path, cfg, steps):
    run = RunDir(path)
    run.start(cfg)
    for epoch, step in enumerate(steps):
        run.append_metrics({"epoch": epoch, "step": step})
    run.test_metrics.write_text("{}")
    return path


def test_the_runner_counts_a_run_finished_at_its_bound(tmp_path):
    cfg = TrainConfig(epochs=20, max_steps=50, test_data="synthetic")
    assert runner.is_finished(_finished_looking_run(tmp_path / "done", cfg, [30, 50]), cfg)
    assert not runner.is_finished(_finished_looking_run(tmp_path / "partial", cfg, [30]), cfg)
    unbounded = cfg.replace(max_steps=None)
    assert not runner.is_finished(_finished_looking_run(tmp_path / "unbounded", unbounded, [30, 50]), unbounded)


def test_tables_and_the_report_say_the_runs_were_cut(tmp_path):
    from experiments import sweep_lr

    args = runner.parser(sweep_lr.EXPERIMENT).parse_args(["--preset", "study", "--max-steps", "40", "--epochs", "3"])
    assert runner.common_fields(args) == {"max_steps": 40, "epochs": 3}
    paragraph = runner.description(sweep_lr.EXPERIMENT, PRESETS["study"], args)
    assert "**every run cut to its first 40 optimizer steps** (`--max-steps 40`" in paragraph
    assert "of a 3-epoch schedule" in paragraph
    assert paragraph.count("--max-steps") == 1
    assert "Changed from the preset on the command line: `--epochs 3`." in paragraph
    assert "cut to" not in describe(PRESETS["study"], PRESETS["study"].config())

    runs = runner.plan(sweep_lr.EXPERIMENT, PRESETS["study"], args, tmp_path)
    document = runner.results_document(sweep_lr.EXPERIMENT, PRESETS["study"], paragraph, runs, [], [], 1, 0.0)
    assert document["preset"]["max_steps"] == 40
    assert "at most 40 optimizer steps (`--max-steps 40`)" in report.bounded(document)
    assert report.bounded({**document, "preset": {**document["preset"], "max_steps": None}}) is None
