"""The experiment scripts end to end at the smoke preset, the runner's skip/resume/reuse, and the study preset's
configurations.

To stay within seconds the real runs train the test-only CNN of `tests.tiny_model` (`--model tiny_test_cnn`,
registered for this module only) instead of the smoke preset's ResNet-18. The scripts that compare architectures
get the tiny CNN under each architecture's name (`tiny_architectures`). Everything else is the smoke preset as a
user runs it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

import knifejax as kj
from experiments import (compare_architectures, compare_optimizers, compare_vit, ensemble, gradcam, members, readme,
                         report, runner, sweep_batch, sweep_lr, sweep_scheduler, transfer_modes)  # fmt: skip
from experiments.presets import format_lr
from knifejax import study
from knifejax.errors import ConfigError
from knifejax.models import registry
from knifejax.train.config import TrainConfig
from knifejax.io import read_state_dict
from knifejax.train.run import RunDir, load_run
from knifejax.weights import timm_slots
from tests.cli_errors import refused
from tests.tiny_model import TINY, TinyCNN, registered

# Every experiment script trains at the smoke preset, on the tiny CNN.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("tiny_model")]

@pytest.fixture(scope="module")
def tiny_architectures():
    """Every architecture the comparison scripts name builds a tiny CNN (keeping its own pretrained
    configuration: input size, normalisation), so that their smoke runs take seconds; the real architectures
    train in their own tests."""
    names = {kw["model"].split(".")[0] for module in (compare_architectures, compare_vit)
             for preset in ("smoke", "study") for kw in module.EXPERIMENT.settings(runner.PRESETS[preset]).values()}  # fmt: skip
    with registered(*names):
        yield names


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    """A weights folder: 'pretrained' weights of the tiny CNN for the smoke preset's 4 classes, in timm key names,
    under its own name and under Lite0's (which the architecture comparison builds as a tiny CNN)."""
    folder = tmp_path_factory.mktemp("weights")
    cfg = {"input_size": [3, 32, 32], "mean": [0.5] * 3, "std": [0.5] * 3}
    for name in (f"{TINY}.test", "tf_efficientnet_lite0.in1k"):
        model = TinyCNN(num_classes=4, pretrained_cfg=cfg, rngs=nnx.Rngs(123))
        kj.save_timm_weights(model, folder / f"{name}.safetensors")
    return folder


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("experiments")


def smoke_files(root: Path, *extra: str) -> list[str]:
    """The smoke preset, quietly, with the decoded images shared by every test and no compile cache."""
    return ["--preset", "smoke", "--no-progress", "--cache-dir", str(root / "decoded"), "--compile-cache", "off", *extra]


def smoke(module, root: Path, *extra: str) -> dict:
    return module.main(["--model", TINY, "--out", str(root / f"{module.EXPERIMENT.name}-smoke"), *smoke_files(root, *extra)])


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
    assert "Preset **smoke**" in table and "2 epochs" in table
    assert all(f"| {label} |" in table for label in labels)
    for name in figures:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / name).stat().st_size > 10_000
    assert saved["runs"] == json.loads(json.dumps(runner.strict_json(document["runs"])))


@pytest.fixture(scope="module")
def lr_sweep(root) -> dict:
    return smoke(sweep_lr, root)


def test_sweep_lr_smoke(lr_sweep, root):
    labels = [f"lr={format_lr(lr)}" for lr in study.LEARNING_RATES]
    check_outputs(lr_sweep, root / "sweep_lr-smoke", labels, ["fig1_learning_rate.png"])
    assert {r["status"] for r in lr_sweep["runs"]} == {"trained"}
    configs = [TrainConfig.from_json(s["config"]) for s in lr_sweep["settings"].values()]
    assert [c.lr for c in configs] == list(study.LEARNING_RATES) and {c.schedule for c in configs} == {"constant"}
    assert {c.image_size for c in configs} == {32} and {c.synthetic_classes for c in configs} == {4}
    # the rate of the first epoch's steps is what each run logged
    assert [r["history"][0]["lr"] for r in lr_sweep["runs"]] == pytest.approx(list(study.LEARNING_RATES), rel=1e-6)


def test_the_readme_table_is_written_from_the_sweeps_results(lr_sweep):
    table = readme.table(lr_sweep)
    finals = [f"{r['history'][-1]['val_map@5']:.3f}" for r in lr_sweep["runs"]]
    tests = [f"{r['test']['map@5']:.3f}" for r in lr_sweep["runs"]]
    assert "| lr | 1e-2 | 1e-3 | 5e-4 | 1e-4 | 1e-5 |" in table and "(chance 0.52)" in table  # 4 classes
    assert f"| {' | '.join(finals)} |" in table and f"| {' | '.join(tests)} |" in table
    text = f"intro\n{readme.BEGIN}\nold table\n{readme.END}\nrest\n"
    assert readme.replace_block(text, table) == f"intro\n{readme.BEGIN}\n\n{table}\n\n{readme.END}\nrest\n"
    with pytest.raises(ConfigError, match="exactly one"):
        readme.replace_block("no markers", table)
    assert readme.BEGIN in (Path(__file__).parents[1] / "README.md").read_text()


def test_sweep_scheduler_smoke_reuses_the_lr_sweeps_constant_runs(lr_sweep, root):
    document = smoke(sweep_scheduler, root)
    labels = [f"lr={format_lr(lr)} {s}" for lr in study.LEARNING_RATES for s in ("constant", "cosine")]
    check_outputs(document, root / "sweep_scheduler-smoke", labels,
                  ["fig2a_lr_schedules.png", "fig2b_final_loss.png", "fig2c_curves.png"])  # fmt: skip
    status = {r["setting"]: r["status"] for r in document["runs"]}
    assert {status[label] for label in labels if label.endswith("constant")} == {"reused"}
    assert {status[label] for label in labels if label.endswith("cosine")} == {"trained"}
    reused = {r["run_dir"] for r in document["runs"] if r["status"] == "reused"}
    assert reused == {r["run_dir"] for r in lr_sweep["runs"]}
    assert not (root / "sweep_scheduler-smoke" / "runs" / "lr=1e-2_constant").exists()
    cosine = next(r for r in document["runs"] if r["setting"] == "lr=1e-3 cosine")
    assert cosine["history"][-1]["lr"] < 1e-3 * 0.5  # annealed


def test_sweep_batch_smoke(root):
    document = smoke(sweep_batch, root)
    check_outputs(document, root / "sweep_batch-smoke", ["batch 4", "batch 8", "batch 16"], ["fig3_batch_size.png"])
    assert [r["history"][0]["step"] for r in document["runs"]] == [8, 4, 2]  # 32 images per epoch
    table = (root / "sweep_batch-smoke" / "table.md").read_text()
    assert "wall time per run" in table and "study MAP@5" in table


def test_compare_optimizers_smoke_with_two_seeds(root):
    document = smoke(compare_optimizers, root, "--seeds", "2")
    labels = ["SGD", "SGD momentum 0.9", "Adam"]
    check_outputs(document, root / "compare_optimizers-smoke", labels, ["fig4_optimizers.png"], seeds=2)
    configs = {label: TrainConfig.from_json(s["config"]) for label, s in document["settings"].items()}
    assert (configs["SGD"].optimizer, configs["SGD"].momentum) == ("sgd", 0.0)
    assert (configs["SGD momentum 0.9"].optimizer, configs["SGD momentum 0.9"].momentum) == ("sgd", 0.9)
    assert configs["Adam"].optimizer == "adam"
    assert " ± " in (root / "compare_optimizers-smoke" / "table.md").read_text()
    seeds = [r for r in document["runs"] if r["setting"] == "Adam"]
    assert seeds[0]["history"][-1]["train_loss"] != seeds[1]["history"][-1]["train_loss"]


class FakeFit:
    """Stands in for knifejax.fit_many: writes what finished runs write, or raises at run `stop_at`."""

    def __init__(self, stop_at: int | None = None):
        self.calls: list[Path] = []
        self.groups: list[int] = []  # how many runs each call trained side by side
        self.stop_at = stop_at

    def __call__(self, cfgs: list[TrainConfig], run_dirs, *, progress=True, log=print):
        self.groups.append(len(cfgs))
        return [self.one(cfg, run_dir) for cfg, run_dir in zip(cfgs, run_dirs)]

    def one(self, cfg: TrainConfig, run_dir):
        self.calls.append(Path(run_dir))
        run = RunDir(run_dir)
        run.start(cfg)
        run.write_classes([f"c{i}" for i in range(cfg.synthetic_classes)])
        run.data_report.write_text(json.dumps({"train": {"items": 2 * cfg.batch_size, "skipped": 0, "problems": 0}}))
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


def test_an_interrupted_sweep_continues_where_it_stopped(tmp_path, monkeypatch, capsys):
    argv = ["--preset", "smoke", "--out", str(tmp_path / "sweep_lr"), "--no-progress", "--compile-cache", "off",
            "--no-vectorize"]  # fmt: skip
    interrupted = FakeFit(stop_at=3)
    monkeypatch.setattr(runner, "fit_many", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        sweep_lr.main(argv)
    assert exit_info.value.code == 130
    assert capsys.readouterr().err.startswith("knifejax: interrupted; the same command resumes")
    assert len(interrupted.calls) == 3
    partial = json.loads((tmp_path / "sweep_lr" / "results.json").read_text())
    assert not partial["complete"] and len(partial["runs"]) == 2
    assert not (tmp_path / "sweep_lr" / "table.md").exists()
    assert json.loads((interrupted.calls[2] / "runner.json").read_text())["finished"] is False

    finished_before = {p: (p / "metrics.jsonl").stat().st_mtime_ns for p in interrupted.calls[:2]}
    resumed = FakeFit()
    monkeypatch.setattr(runner, "fit_many", resumed)
    document = sweep_lr.main(argv)
    assert len(resumed.calls) == 3 and resumed.calls[0] == interrupted.calls[2]  # the interrupted run, again
    assert [r["status"] for r in document["runs"]] == ["finished before"] * 2 + ["resumed", "trained", "trained"]
    assert {p: (p / "metrics.jsonl").stat().st_mtime_ns for p in interrupted.calls[:2]} == finished_before
    assert (tmp_path / "sweep_lr" / "table.md").exists()

    again = FakeFit()
    monkeypatch.setattr(runner, "fit_many", again)
    sweep_lr.main(argv)
    assert again.calls == []  # all finished: nothing trains


@pytest.mark.parametrize("flags,backend,groups", [
    (["--vectorize"], "cpu", [5]), (["--no-vectorize"], "gpu", [1] * 5), ([], "gpu", [5]), ([], "cpu", [1] * 5),
])  # fmt: skip
def test_a_sweep_trains_its_rates_side_by_side_by_default_off_the_cpu(flags, backend, groups, tmp_path, monkeypatch):
    fake = FakeFit()
    monkeypatch.setattr(runner, "fit_many", fake)
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    document = sweep_lr.main(["--preset", "smoke", "--out", str(tmp_path / "sweep"), "--no-progress",
                              "--compile-cache", "off", *flags])  # fmt: skip
    assert fake.groups == groups and [r["status"] for r in document["runs"]] == ["trained"] * 5


def test_a_folder_of_another_preset_is_refused_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runner, "fit_many", FakeFit())
    out = str(tmp_path / "sweep_batch")
    sweep_batch.main(["--preset", "smoke", "--out", out, "--no-progress", "--compile-cache", "off"])
    with refused(capsys, "hold runs of other settings"):
        sweep_batch.main(["--preset", "smoke", "--out", out, "--no-progress", "--seeds", "1", "--model", "resnet34"])


@pytest.mark.parametrize("module", [sweep_lr, sweep_scheduler, sweep_batch, compare_optimizers])
def test_study_preset_runs_the_studys_settings(module, tmp_path, capsys):
    runs = runner.plan(
        module.EXPERIMENT,
        runner.PRESETS["study"],
        runner.parser(module.EXPERIMENT).parse_args(["--data", "train.csv", "--val-data", "test.csv", "--root", "knives",
                                                     "--weights-dir", str(tmp_path)]),  # fmt: skip
        tmp_path,
    )
    for run in runs:
        cfg = run.config
        assert (cfg.model, cfg.image_size, cfg.epochs, cfg.norm) == ("tf_efficientnet_b0.aa_in1k", 224, 20, "imagenet")
        assert (cfg.data, cfg.val_data, cfg.root, cfg.pretrained) == ("train.csv", "test.csv", "knives", "default")
        assert cfg.weights_dir == str(tmp_path)
        assert cfg.batch_size in study.BATCH_SIZES and cfg.lr in study.LEARNING_RATES
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
    words = ("--preset", "smoke", "quick", "study", "--weights-dir", "--seeds", "--epochs", "--lr", "--batch-size",
             "--classes-file", "selects on the test set")
    assert all(word in text for word in words)


RUNNER_SCRIPTS = (sweep_lr, sweep_scheduler, sweep_batch, compare_optimizers, transfer_modes, compare_architectures,
                  compare_vit)  # fmt: skip


@pytest.mark.parametrize("module", RUNNER_SCRIPTS)
def test_every_script_takes_the_training_flags_and_its_table_names_them(module, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runner, "fit_many", FakeFit())
    classes = tmp_path / "classes.txt"
    classes.write_text("a\nb\nc\nd\n")
    (tmp_path / "resnet18.a1_in1k.safetensors").write_bytes(b"")  # transfer_modes' smoke weights (FakeFit reads none)
    flags = {"--epochs": "3", "--lr": "0.002", "--batch-size": "4", "--classes-file": str(classes),
             "--weights-dir": str(tmp_path), "--label-smoothing": "0.1"}  # fmt: skip
    varied = runner.varied_fields(module.EXPERIMENT, runner.PRESETS["smoke"])
    not_for_it = {f: v for f, v in flags.items() if f[2:].replace("-", "_") in varied}
    accepted = {f: v for f, v in flags.items() if f not in not_for_it}
    base = ["--preset", "smoke", "--out", str(tmp_path / "out"), "--no-progress", "--compile-cache", "off"]
    for flag_name, value in not_for_it.items():  # e.g. --lr in sweep_lr: its settings choose the rate
        with refused(capsys, f"{flag_name} does not apply to {module.EXPERIMENT.name}"):
            module.main([*base, flag_name, value])
    document = module.main([*base, *(x for pair in accepted.items() for x in pair)])
    for setting in document["settings"].values():
        cfg = TrainConfig.from_json(setting["config"])
        assert cfg.classes_file == str(classes) and cfg.weights_dir == str(tmp_path) and cfg.label_smoothing == 0.1
        assert "--epochs" in not_for_it or cfg.epochs == 3
        assert "--lr" in not_for_it or cfg.lr == 0.002
        assert "--batch-size" in not_for_it or cfg.batch_size == 4
    paragraph = next(line for line in (tmp_path / "out" / "table.md").read_text().splitlines()
                     if line.startswith("Preset **smoke**"))  # fmt: skip
    named = [f"`{f} {v}`" for f, v in accepted.items() if f != "--weights-dir"]  # where weights come from: no change
    assert all(name in paragraph for name in named), paragraph
    assert "Changed from the preset on the command line" in paragraph and "--weights-dir" not in paragraph


def test_ensemble_and_gradcam_take_the_same_flags():
    for module in (ensemble, gradcam):
        args = members.parser(module.EXPERIMENT, compare_architectures.EXPERIMENT).parse_args(
            ["--epochs", "3", "--lr", "0.002", "--batch-size", "4", "--classes-file", "c.txt", "--weights-dir", "w"])
        assert runner.common_fields(args) == {"epochs": 3, "lr": 0.002, "batch_size": 4, "classes_file": "c.txt",
                                              "weights_dir": "w"}  # fmt: skip


def test_a_flag_replaces_what_every_setting_sets_alike(tmp_path):
    """compare_vit's from-scratch rows all train at one rate: the experiment's own base, which --lr changes."""
    preset = runner.PRESETS["quick"]
    uniform = runner.uniform_overrides(compare_vit.EXPERIMENT, preset)
    assert uniform == {"pretrained": None, "lr": compare_vit.SCRATCH_LR}
    args = runner.parser(compare_vit.EXPERIMENT).parse_args(["--lr", "1e-4"])
    assert {r.config.lr for r in runner.plan(compare_vit.EXPERIMENT, preset, args, tmp_path)} == {1e-4}
    assert runner.varied_fields(compare_vit.EXPERIMENT, preset) == {"model", "image_size"}


def test_the_study_ensemble_has_the_studys_four_members():
    study_members = compare_architectures.ensemble_members(runner.PRESETS["study"])
    assert "EfficientNet-B3, 55 epochs" in compare_architectures.settings(runner.PRESETS["study"])
    assert study_members == ["EfficientNet-B0", "ResNet-18", "MobileNetV3-Large", "SKResNet-18"]
    assert compare_architectures.ensemble_members(runner.PRESETS["smoke"]) == list(
        compare_architectures.settings(runner.PRESETS["smoke"]))


def test_results_json_is_strict_even_with_nan():
    assert runner.strict_json({"a": [1.0, float("nan")], "b": float("inf")}) == {"a": [1.0, None], "b": None}


def test_missing_pretrained_weights_leave_no_run_behind(tmp_path, monkeypatch, capsys):
    from knifejax.models.pretrained import PretrainedUnavailableError

    def unavailable(cfgs, run_dirs, **kwargs):
        RunDir(run_dirs[0]).start(cfgs[0])
        raise PretrainedUnavailableError("no weights for tf_efficientnet_b0 here")

    monkeypatch.setattr(runner, "fit_many", unavailable)
    out = tmp_path / "sweep_batch"
    with refused(capsys, "--weights-dir DIR holding tf_efficientnet_b0.aa_in1k.safetensors"):
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


def test_transfer_modes_smoke_freezes_the_first_stages(root, tiny_weights):
    out = root / "transfer_modes-smoke"
    document = smoke(transfer_modes, root, "--weights-dir", str(tiny_weights))
    labels = list(transfer_modes.EXPERIMENT.settings(runner.PRESETS["smoke"]))
    check_outputs(document, out, labels, ["fig5_transfer_modes.png"])
    start = read_state_dict(tiny_weights / f"{TINY}.test.safetensors")
    final = {label: {k: np.asarray(v.variable[...]) for k, v in timm_slots(load_run(r["run_dir"], "latest")[0]).items()}
             for label, r in zip(labels, document["runs"])}  # fmt: skip
    scratch, transfer, tune = (final[label] for label in labels)
    frozen = ("conv.", "bn.", "convs.0.", "convs.1.", "convs.2.")  # 4 stages: conv + bn, then three convs
    for key in start:
        if key.startswith(frozen):
            np.testing.assert_array_equal(tune[key], start[key], err_msg=key)  # not one bit moved
        assert not np.array_equal(transfer[key], start[key]), key
    assert not np.array_equal(scratch["conv.kernel"], start["conv.kernel"])
    np.testing.assert_array_equal(tune["bn.running_mean"], start["bn.running_mean"])  # frozen: statistics kept
    assert not np.array_equal(transfer["bn.running_mean"], start["bn.running_mean"])
    assert not np.array_equal(tune["fc.weight"], start["fc.weight"])
    table = (out / "table.md").read_text()
    assert "trainable parameters" in table
    summaries = {r["setting"]: r["model"] for r in document["runs"]}
    assert summaries[labels[2]]["trainable_parameters"] == start["fc.weight"].size + start["fc.bias"].size
    assert summaries[labels[1]]["trainable_parameters"] == summaries[labels[1]]["parameters"]


@pytest.fixture(scope="module")
def architectures(root, tiny_architectures, tiny_weights) -> dict:
    return compare_architectures.main(["--out", str(root / "compare_architectures-smoke"),
                                       "--weights-dir", str(tiny_weights), *smoke_files(root)])  # fmt: skip


def test_compare_architectures_smoke(architectures, root, tiny_weights, capsys):
    labels = list(compare_architectures.settings(runner.PRESETS["smoke"]))
    check_outputs(architectures, root / "compare_architectures-smoke", labels, ["fig6_architectures.png"])
    models = [TrainConfig.from_json(s["config"]).model for s in architectures["settings"].values()]
    assert models == ["tf_efficientnet_lite0", "tf_efficientnet_lite0", "resnet18", "mobilenetv3_large_100", "skresnet18"]
    configs = [TrainConfig.from_json(s["config"]) for s in architectures["settings"].values()]
    assert [c.pretrained for c in configs] == ["default"] + [None] * 4
    assert {c.weights_dir for c in configs} == {str(tiny_weights)}
    table = (root / "compare_architectures-smoke" / "table.md").read_text()
    assert "| ResNet-18, from scratch | 0.00 M |" in table and "0.586" in table  # the study's ResNet-18
    with refused(capsys, "--model does not apply"):
        compare_architectures.main(["--model", TINY, "--list"])


def test_compare_architectures_study_preset_names_the_studys_weights():
    settings = compare_architectures.settings(runner.PRESETS["study"])
    assert [o["model"] for o in settings.values()] == ["tf_efficientnet_b0.aa_in1k", "resnet18.tv_in1k",
                                                      "mobilenetv3_large_100.ra_in1k", "skresnet18.ra_in1k",
                                                      "tf_efficientnet_b3.aa_in1k"]  # fmt: skip
    assert list(settings.values())[-1]["epochs"] == 55


def test_compare_vit_smoke_builds_each_vit_for_its_input_size(root, tiny_architectures, monkeypatch):
    built = []
    monkeypatch.setitem(registry._BUILDERS, "vit_small_patch8_224", lambda **kw: built.append(kw) or TinyCNN(**kw))
    document = compare_vit.main(["--out", str(root / "compare_vit-smoke"), *smoke_files(root)])
    labels = list(compare_vit.settings(runner.PRESETS["smoke"]))
    check_outputs(document, root / "compare_vit-smoke", labels, ["fig7_vit.png"])
    assert {kw["img_size"] for kw in built} == {40}  # the size of its row, passed as timm's img_size
    study = compare_vit.settings(runner.PRESETS["study"])
    assert [o["model"] for o in study.values()] == ["vit_small_patch16_384.augreg_in21k_ft_in1k",
                                                   "vit_small_patch8_224.dino",
                                                   "vit_base_patch32_clip_224.laion2b_ft_in12k_in1k"]  # fmt: skip
    assert [o["image_size"] for o in study.values()] == [384, 224, 224]


@pytest.fixture(scope="module")
def ensembled(architectures, root, tiny_weights) -> tuple[dict, dict]:
    """The ensemble and Grad-CAM experiments' documents, both over the architecture comparison's runs."""
    flags = ["--members", str(root / "compare_architectures-smoke"), "--weights-dir", str(tiny_weights),
             *smoke_files(root)]  # fmt: skip
    return ensemble.main(["--out", str(root / "ensemble-smoke"), *flags]), gradcam.main(["--out", str(root / "gradcam-smoke"), *flags])


def test_ensemble_and_gradcam_smoke_reuse_the_architecture_runs(ensembled, architectures, root):
    document, explained = ensembled
    assert {r["status"] for r in json.loads((root / "compare_architectures-smoke" / "results.json").read_text())["runs"]} == {
        "finished before"}
    names = [r["name"] for r in document["rows"]]
    assert names == [*compare_architectures.settings(runner.PRESETS["smoke"]), *ensemble.methods(True)]
    for row in document["rows"]:
        assert 0 <= row["map@1"] <= row["map@5"] <= 1 and row["map@1_se"] > 0
    members = {r["setting"]: r for r in architectures["runs"]}
    for row in document["rows"][:5]:  # a member's MAP@5 here is its test MAP@5 in compare_architectures
        assert row["map@5"] == pytest.approx(members[row["name"]]["test"]["map@5"], abs=1e-6)
    table = (root / "ensemble-smoke" / "table.md").read_text()
    assert "| **score averaging** |" in table and "0.719" in table and "0.734" in table
    assert "| ResNet-18, from scratch | " in table and "| 0.609 |" in table  # the study's ResNet-18 member (Table 4)
    assert (root / "ensemble-smoke" / "fig8_ensembles.png").stat().st_size > 10_000

    assert [r["setting"] for r in explained["runs"]] == list(members)
    for run in explained["runs"]:
        assert run["layer"] == "convs.2" and run["correct"] + run["failed"] == run["images"] == 8
        assert len(run["shown"]["correct"]) == min(gradcam.PER_KIND, run["correct"])
    assert (root / "gradcam-smoke" / "fig9_gradcam.png").stat().st_size > 10_000


def test_report_collects_every_experiment(lr_sweep, ensembled, root, tmp_path):
    """Every experiment folder in the runs' root gets its section (those of the fixtures this test asks for, and
    any other test's that ran before), the others are listed as missing."""
    page = report.main(["--preset", "smoke", "--runs", str(root), "--out", str(tmp_path / "results.md")])
    text = page.read_text()
    present = [name for name in report.ORDER if (root / f"{name}-smoke" / "table.md").exists()]
    assert {"sweep_lr", "compare_architectures", "ensemble", "gradcam"} <= set(present)
    assert text.count("**Finding.**") == len(present)
    assert "**The study's epoch-7 reading (Fig. 1).** lr=1e-4 after epoch 7" in text
    assert "n/a: the run has 2 epochs" in text
    assert "0.661 in Table 1, 0.694 in Table 2 and 0.694 in Table 3" in text
    for name in report.ORDER:
        command = f"`python -m experiments.{name}`" if name in present else f"`python -m experiments.{name} --preset smoke`"
        assert command in text
    links = [line.split("](")[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]
    assert len(links) >= len(present)
    for link in links:
        assert (tmp_path / link).stat().st_size > 10_000


def test_report_calls_a_difference_a_finding_only_beyond_the_spread():
    a, b = report.Score("a", 0.50, 0.02), report.Score("b", 0.45, 0.02)
    assert report.differs(a, b) is False  # gap 0.05 < 2 * 0.028
    assert report.differs(a, report.Score("c", 0.40, 0.02)) is True
    assert report.differs(a, report.Score("d", 0.40, None)) is None
    assert "within the spread" in report.versus(a, b) and "above" in report.versus(a, report.Score("c", 0.4, 0.02))


def test_without_test_metrics_the_report_scores_by_the_final_validation_and_says_so():
    """The study preset validates on test.csv every epoch and has no test set: its findings compare the final
    epoch's validation MAP@5 (the study's own number), with the standard error over those images."""
    def run(setting: str, val_map5: float, test: dict | None = None) -> dict:
        history = [{"val_map@5": 0.01, "val_map@5_se": 0.01}, {"val_map@5": val_map5, "val_map@5_se": 0.02}]
        return {"setting": setting, "history": history, "test": test}

    document = {"settings": {"lr=1e-3": {}, "lr=1e-4": {}}, "preset": {"name": "study"},
                "runs": [run("lr=1e-3", 0.40), run("lr=1e-4", 0.60)]}  # fmt: skip
    assert not report.scored_by_test(document)
    assert report.setting_scores(document) == [report.Score("lr=1e-3", 0.40, 0.02), report.Score("lr=1e-4", 0.60, 0.02)]
    said = report.finding("sweep_lr", document)
    assert said.startswith(report.BY_VALIDATION) and "best lr=1e-4 (0.600 ± 0.020)" in said

    for run_, test_map5 in zip(document["runs"], (0.30, 0.35)):  # with --test-data: scored by the test images
        run_["test"] = {"map@5": test_map5, "map@5_se": 0.05}
    assert report.setting_scores(document) == [report.Score("lr=1e-3", 0.30, 0.05), report.Score("lr=1e-4", 0.35, 0.05)]
    said = report.finding("sweep_lr", document)
    assert said.startswith("Held: the study's rate, 1e-4, scored best here too; best lr=1e-4 (0.350 ± 0.050)")


def test_the_recorded_command_leaves_out_what_changes_no_result():
    argv = ["--no-progress", "--compile-cache", "/somewhere/jax", "--seeds", "3", "--compile-cache=off", "--debug",
            "--no-reuse", "--epochs", "2"]  # fmt: skip
    assert runner.recorded_command("sweep_lr", argv) == "python -m experiments.sweep_lr --seeds 3 --epochs 2"
