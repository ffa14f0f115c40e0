"""The experiment scripts end to end at the smoke preset, the runner's skip/resume/reuse, and the study preset's
configurations.

To stay within seconds the real runs train a tiny test-only CNN (`--model tiny_test_cnn`, registered here for
this module only) instead of the smoke preset's ResNet-18: its train step compiles in a fraction of a second,
and each learning rate is a constant inside the step, so every setting compiles its own. Everything else is
the smoke preset as a user runs it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax
import pytest
from flax import nnx

from experiments import compare_optimizers, runner, sweep_batch, sweep_lr, sweep_scheduler
from experiments.presets import STUDY_BATCH_SIZES, STUDY_LEARNING_RATES, format_lr
from knifejax.models import registry
from knifejax.train.config import TrainConfig
from knifejax.train.run import RunDir

TINY = "tiny_test_cnn"


class TinyCNN(nnx.Module):
    """conv 3x3 -> BatchNorm -> ReLU -> global mean -> linear: enough for fit's every path."""

    def __init__(self, *, num_classes: int, pretrained_cfg: dict, rngs: nnx.Rngs, **unused):
        self.pretrained_cfg = pretrained_cfg
        self.conv = nnx.Conv(3, 8, (3, 3), strides=2, rngs=rngs)
        self.bn = nnx.BatchNorm(8, rngs=rngs)
        self.fc = nnx.Linear(8, num_classes, rngs=rngs)

    def stages(self) -> list[tuple[str, ...]]:
        return [("conv", "bn")]

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc(jax.nn.relu(self.bn(self.conv(x))).mean(axis=(1, 2)))


@pytest.fixture(scope="module", autouse=True)
def tiny_model():
    cfg = {"tags": {"test": {"input_size": [3, 32, 32], "mean": [0.5] * 3, "std": [0.5] * 3, "num_classes": 4}}}
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(registry._BUILDERS, TINY, lambda **kwargs: TinyCNN(**kwargs))
        mp.setitem(registry._all_pretrained_cfgs(), TINY, cfg)
        yield


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("experiments")


def smoke(module, root: Path, *extra: str) -> dict:
    argv = ["--preset", "smoke", "--model", TINY, "--out", str(root / module.EXPERIMENT.name), "--no-progress",
            "--cache-dir", str(root / "decoded"), "--compile-cache", "off", *extra]  # fmt: skip
    return module.main(argv)


def check_outputs(document: dict, out: Path, labels: list[str], figures: list[str], seeds: int = 1) -> None:
    saved = json.loads((out / "results.json").read_text())
    assert saved["complete"] and list(saved["settings"]) == labels
    assert saved["preset"]["name"] == "smoke" and saved["seeds"] == list(range(seeds))
    assert [(r["setting"], r["seed"]) for r in saved["runs"]] == [(label, s) for label in labels for s in range(seeds)]
    for run in saved["runs"]:
        assert len(run["history"]) == 2  # the smoke preset's epochs
        values = [h[k] for h in run["history"] for k in ("train_loss", "val_loss", "val_map@5")]
        values += [run["test"]["map@5"], run["wall_seconds"]]
        assert all(isinstance(v, float) and math.isfinite(v) for v in values)
        assert 0 <= run["test"]["map@5"] <= 1
    table = (out / "table.md").read_text()
    assert "Preset **smoke**" in table and "32 px" in table and "2 epochs" in table
    assert all(f"| {label} |" in table for label in labels)
    for name in figures:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / name).stat().st_size > 10_000
    assert saved["runs"] == json.loads(json.dumps(runner._finite(document["runs"])))


@pytest.fixture(scope="module")
def lr_sweep(root) -> dict:
    return smoke(sweep_lr, root)


def test_sweep_lr_smoke(lr_sweep, root):
    labels = [f"lr={format_lr(lr)}" for lr in STUDY_LEARNING_RATES]
    check_outputs(lr_sweep, root / "sweep_lr", labels, ["fig1_learning_rate.png"])
    assert {r["status"] for r in lr_sweep["runs"]} == {"trained"}
    configs = [TrainConfig.from_json(s["config"]) for s in lr_sweep["settings"].values()]
    assert [c.lr for c in configs] == list(STUDY_LEARNING_RATES) and {c.schedule for c in configs} == {"constant"}
    assert {c.image_size for c in configs} == {32} and {c.synthetic_classes for c in configs} == {4}
    # the rate of the first epoch's steps is what each run logged
    assert [r["history"][0]["lr"] for r in lr_sweep["runs"]] == pytest.approx(list(STUDY_LEARNING_RATES), rel=1e-6)


def test_sweep_scheduler_smoke_reuses_the_lr_sweeps_constant_runs(lr_sweep, root):
    document = smoke(sweep_scheduler, root)
    labels = [f"lr={format_lr(lr)} {s}" for lr in STUDY_LEARNING_RATES for s in ("constant", "cosine")]
    check_outputs(document, root / "sweep_scheduler", labels,
                  ["fig2a_lr_schedules.png", "fig2b_final_loss.png", "fig2c_curves.png"])  # fmt: skip
    status = {r["setting"]: r["status"] for r in document["runs"]}
    assert {status[label] for label in labels if label.endswith("constant")} == {"reused"}
    assert {status[label] for label in labels if label.endswith("cosine")} == {"trained"}
    reused = {r["run_dir"] for r in document["runs"] if r["status"] == "reused"}
    assert reused == {r["run_dir"] for r in lr_sweep["runs"]}
    assert not (root / "sweep_scheduler" / "runs" / "lr=1e-2_constant").exists()
    cosine = next(r for r in document["runs"] if r["setting"] == "lr=1e-3 cosine")
    assert cosine["history"][-1]["lr"] < 1e-3 * 0.5  # annealed


def test_sweep_batch_smoke(root):
    document = smoke(sweep_batch, root)
    check_outputs(document, root / "sweep_batch", ["batch 4", "batch 8", "batch 16"], ["fig3_batch_size.png"])
    assert [r["history"][0]["step"] for r in document["runs"]] == [8, 4, 2]  # 32 images per epoch
    table = (root / "sweep_batch" / "table.md").read_text()
    assert "wall time per run" in table and "study MAP@5" in table


def test_compare_optimizers_smoke_with_two_seeds(root):
    document = smoke(compare_optimizers, root, "--seeds", "2")
    labels = ["SGD", "SGD momentum 0.9", "Adam"]
    check_outputs(document, root / "compare_optimizers", labels, ["fig4_optimizers.png"], seeds=2)
    configs = {label: TrainConfig.from_json(s["config"]) for label, s in document["settings"].items()}
    assert (configs["SGD"].optimizer, configs["SGD"].momentum) == ("sgd", 0.0)
    assert (configs["SGD momentum 0.9"].optimizer, configs["SGD momentum 0.9"].momentum) == ("sgd", 0.9)
    assert configs["Adam"].optimizer == "adam"
    assert " ± " in (root / "compare_optimizers" / "table.md").read_text()
    seeds = [r for r in document["runs"] if r["setting"] == "Adam"]
    assert seeds[0]["history"][-1]["train_loss"] != seeds[1]["history"][-1]["train_loss"]


class FakeFit:
    """Stands in for knifejax.fit: writes what a finished run writes, or raises at call `stop_at`."""

    def __init__(self, stop_at: int | None = None):
        self.calls: list[Path] = []
        self.stop_at = stop_at

    def __call__(self, cfg: TrainConfig, run_dir, *, progress=True, log=print):
        self.calls.append(Path(run_dir))
        run = RunDir(run_dir)
        run.start(cfg)
        run.write_classes([f"c{i}" for i in range(cfg.synthetic_classes)])
        for epoch in range(len(run.history()), cfg.epochs):
            if self.stop_at is not None and len(self.calls) == self.stop_at and epoch == 1:
                run.latest.mkdir(parents=True, exist_ok=True)  # a checkpoint of epoch 1: the run resumes
                raise KeyboardInterrupt
            loss = 1.0 / (1 + epoch) / cfg.lr
            run.append_metrics({"epoch": epoch, "step": 2 * (epoch + 1), "lr": cfg.lr, "train_loss": loss,
                                "train_map@5": 0.5, "val_loss": loss, "val_map@1": 0.3, "val_map@5": 0.5,
                                "val_acc@5": 1.0, "train_seconds": 1.0, "eval_seconds": 0.5, "images_per_s": 10.0})  # fmt: skip
        run.test_metrics.write_text(json.dumps({"model": "final", "loss": 1.0, "map@1": 0.3, "map@5": 0.5, "acc@5": 1.0}))
        return run.history()


def test_an_interrupted_sweep_continues_where_it_stopped(tmp_path, monkeypatch):
    argv = ["--preset", "smoke", "--out", str(tmp_path / "sweep_lr"), "--no-progress", "--compile-cache", "off"]
    interrupted = FakeFit(stop_at=3)
    monkeypatch.setattr(runner, "fit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sweep_lr.main(argv)
    assert len(interrupted.calls) == 3
    partial = json.loads((tmp_path / "sweep_lr" / "results.json").read_text())
    assert not partial["complete"] and len(partial["runs"]) == 2
    assert not (tmp_path / "sweep_lr" / "table.md").exists()
    assert json.loads((interrupted.calls[2] / "runner.json").read_text())["finished"] is False

    finished_before = {p: (p / "metrics.jsonl").stat().st_mtime_ns for p in interrupted.calls[:2]}
    resumed = FakeFit()
    monkeypatch.setattr(runner, "fit", resumed)
    document = sweep_lr.main(argv)
    assert len(resumed.calls) == 3 and resumed.calls[0] == interrupted.calls[2]  # the interrupted run, again
    assert [r["status"] for r in document["runs"]] == ["finished before"] * 2 + ["resumed", "trained", "trained"]
    assert {p: (p / "metrics.jsonl").stat().st_mtime_ns for p in interrupted.calls[:2]} == finished_before
    assert (tmp_path / "sweep_lr" / "table.md").exists()

    again = FakeFit()
    monkeypatch.setattr(runner, "fit", again)
    sweep_lr.main(argv)
    assert again.calls == []  # all finished: nothing trains


def test_a_folder_of_another_preset_is_refused_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "fit", FakeFit())
    out = str(tmp_path / "sweep_batch")
    sweep_batch.main(["--preset", "smoke", "--out", out, "--no-progress", "--compile-cache", "off"])
    with pytest.raises(SystemExit, match="hold runs of other settings"):
        sweep_batch.main(["--preset", "smoke", "--out", out, "--no-progress", "--seeds", "1", "--model", "resnet34"])


@pytest.mark.parametrize("module", [sweep_lr, sweep_scheduler, sweep_batch, compare_optimizers])
def test_study_preset_runs_the_studys_settings(module, tmp_path, capsys):
    weights = tmp_path / "b0.pth"
    weights.write_bytes(b"")
    runs = runner.plan(
        module.EXPERIMENT,
        runner.PRESETS["study"],
        runner.parser(module.EXPERIMENT).parse_args(["--data", "train.csv", "--val-data", "test.csv", "--root", "knives",
                                                     "--pretrained", f"tf_efficientnet_b0={weights}"]),  # fmt: skip
        tmp_path,
    )
    for run in runs:
        cfg = run.config
        assert (cfg.model, cfg.image_size, cfg.epochs, cfg.norm) == ("tf_efficientnet_b0", 224, 20, "imagenet")
        assert (cfg.data, cfg.val_data, cfg.root, cfg.pretrained) == ("train.csv", "test.csv", "knives", str(weights))
        assert cfg.batch_size in STUDY_BATCH_SIZES and cfg.lr in STUDY_LEARNING_RATES
    overrides = module.EXPERIMENT.settings(runner.PRESETS["study"])
    untouched = {k for o in overrides.values() for k in o}
    base = TrainConfig.study()
    for field in ("optimizer", "lr", "schedule", "batch_size"):
        if field not in untouched:
            assert {getattr(r.config, field) for r in runs} == {getattr(base, field)}
    module.main(["--data", "train.csv", "--list", "--out", str(tmp_path / "listed")])  # --data: study by default
    assert "Preset **study**" in capsys.readouterr().out and not (tmp_path / "listed").exists()


def test_help_describes_presets_and_examples(capsys):
    with pytest.raises(SystemExit):
        sweep_lr.main(["--help"])
    text = capsys.readouterr().out
    assert all(word in text for word in ("--preset", "smoke", "quick", "study", "--pretrained NAME=FILE", "--seeds"))


def test_results_json_is_strict_even_with_nan():
    assert runner._finite({"a": [1.0, float("nan")], "b": float("inf")}) == {"a": [1.0, None], "b": None}


def test_missing_pretrained_weights_leave_no_run_behind(tmp_path, monkeypatch):
    from knifejax.models.pretrained import PretrainedUnavailableError

    def unavailable(cfg, run_dir, **kwargs):
        RunDir(run_dir).start(cfg)
        raise PretrainedUnavailableError("no weights for tf_efficientnet_b0 here")

    monkeypatch.setattr(runner, "fit", unavailable)
    out = tmp_path / "sweep_batch"
    with pytest.raises(SystemExit, match="--pretrained tf_efficientnet_b0=FILE"):
        sweep_batch.main(["--preset", "study", "--data", "train.csv", "--out", str(out), "--no-progress",
                          "--compile-cache", "off"])  # fmt: skip
    assert not (out / "runs" / "batch_16" / "seed0").exists()  # the same command with a weights file can start


def test_compile_cache_is_set_for_the_runs_and_restored_after(tmp_path):
    before = jax.config.jax_compilation_cache_dir
    with runner.compile_cache(str(tmp_path / "jax")):
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "jax")
    assert jax.config.jax_compilation_cache_dir == before
    with runner.compile_cache("off"):
        assert jax.config.jax_compilation_cache_dir == before
