"""The study's setting (`knifejax.study`) as every entry point reads it, and the weights folder.

The CLI test builds the real EfficientNet-B0 as training does (`build_model`, what `fit` trains): the point is
that `--preset study` without `--model` means B0 with the study's tag and normalisation, its weights loaded from
`--weights-dir`, which a stand-in model could not show. The study preset's training itself, from a weights folder,
runs in tests/test_rehearsal.py (on ResNet-18, whose train step compiles faster than B0's).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import experiments
import knifejax as kj
from experiments import (compare_architectures, compare_optimizers, compare_vit, ensemble, report, runner,
                         study_results, sweep_batch, sweep_lr, sweep_scheduler, transfer_modes)  # fmt: skip
from knifejax import cli, study
from knifejax.models.weights_folder import missing_weights_message, weights_in_folder
from knifejax.train.config import TrainConfig
from knifejax.train.run import build_model
from tests.cli_errors import refused

CNN_EXPERIMENTS = (sweep_lr, sweep_scheduler, sweep_batch, compare_optimizers, transfer_modes, compare_architectures)


def test_the_study_setting_names_the_weights_it_loaded_its_recipe_and_data_roles():
    assert [(a.label, a.model) for a in study.ARCHITECTURES] == [
        ("EfficientNet-B0", "tf_efficientnet_b0.aa_in1k"), ("ResNet-18", "resnet18.tv_in1k"),
        ("MobileNetV3-Large", "mobilenetv3_large_100.ra_in1k"), ("SKResNet-18", "skresnet18.ra_in1k"),
        ("EfficientNet-B3", "tf_efficientnet_b3.aa_in1k"),
    ]  # fmt: skip
    for architecture in study.ARCHITECTURES:  # each tag exists and is not what timm 1.0's bare name loads
        assert kj.get_pretrained_cfg(architecture.model)["tag"] == architecture.model.split(".")[1]
    assert kj.get_pretrained_cfg("tf_efficientnet_b0")["tag"] != "aa_in1k"
    assert [a.label for a in study.ARCHITECTURES if a.ensemble_member] == [a.label for a in study.ARCHITECTURES[:4]]
    cfg = TrainConfig.study()
    assert (cfg.model, cfg.pretrained, cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.schedule, cfg.t_max) == (
        "tf_efficientnet_b0.aa_in1k", "default", "adam", 1e-4, 0.0, "cosine", None)
    assert (cfg.batch_size, cfg.epochs, cfg.image_size, cfg.norm, cfg.precision) == (32, 20, 224, "imagenet", "fp32")
    assert (cfg.brightness, cfg.rotation, cfg.hflip, cfg.vflip, cfg.augment) == (0.2, (0.0, 180.0), 0.5, 0.5, True)
    assert "test.csv" in study.DATA_ROLES and TrainConfig.study(lr=1e-3).lr == 1e-3


def test_the_cli_preset_and_every_experiments_study_preset_read_the_setting(tmp_path):
    args = cli.build_parser().parse_args(["train", "--run", str(tmp_path / "r"), "--preset", "study"])
    assert cli._config_from_args(args) == TrainConfig.study()
    preset = runner.PRESETS["study"]
    assert preset.config() == TrainConfig.study()
    for module in CNN_EXPERIMENTS:
        parsed = runner.parser(module.EXPERIMENT).parse_args(["--data", "train.csv", "--val-data", "test.csv"])
        settings = module.EXPERIMENT.settings(preset)
        for run in runner.plan(module.EXPERIMENT, preset, parsed, tmp_path):
            # the study's setting, changed only where the experiment's setting says
            expected = TrainConfig.study(data="train.csv", val_data="test.csv", **settings[run.setting])
            assert run.config == expected, module.__name__
            assert "." in run.config.model  # a tag, never timm 1.0's bare default
    models = [o["model"] for o in compare_architectures.settings(preset).values()]
    assert models == [a.model for a in study.ARCHITECTURES]
    assert compare_architectures.ensemble_members(preset) == ["EfficientNet-B0", "ResNet-18", "MobileNetV3-Large",
                                                              "SKResNet-18"]  # fmt: skip
    assert all("norm" not in o for o in compare_vit.settings(preset).values())  # ImageNet mean/std, as the study
    assert ensemble.EXPERIMENT.settings is compare_architectures.settings


def test_cli_study_preset_without_model_builds_b0_from_the_weights_folder(tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    seeded = kj.create_model("tf_efficientnet_b0.aa_in1k", seed=7)
    kj.save_timm_weights(seeded, weights / "tf_efficientnet_b0.aa_in1k.safetensors")
    args = cli.build_parser().parse_args(["train", "--run", str(tmp_path / "run"), "--preset", "study", "--data",
                                          "train.csv", "--weights-dir", str(weights)])  # fmt: skip
    cfg = cli._config_from_args(args)
    assert (cfg.model, cfg.pretrained, cfg.norm, cfg.weights_dir) == (
        "tf_efficientnet_b0.aa_in1k", "default", "imagenet", str(weights))
    with pytest.warns(UserWarning, match="classifier"):  # 2 classes, not ImageNet's 1000: a fresh head
        model = build_model(cfg, num_classes=2)  # the model `fit` trains
    built, start = kj.timm_state_dict(model), kj.timm_state_dict(seeded)
    assert built["classifier.weight"].shape == (2, 1280)
    for key in start.keys() - {"classifier.weight", "classifier.bias"}:  # every other array is the file's, bit for bit
        np.testing.assert_array_equal(np.asarray(built[key]), np.asarray(start[key]), err_msg=key)


def test_a_missing_weights_file_is_one_message_naming_each_file_and_its_source(tmp_path, capsys):
    with refused(capsys) as said:  # said before any data is read: train.csv does not even exist
        cli.main(["train", "--run", str(tmp_path / "run"), "--preset", "study", "--data", str(tmp_path / "train.csv"),
                  "--weights-dir", str(tmp_path)])  # fmt: skip
    text = said["err"] + said["out"]
    assert "tf_efficientnet_b0.aa_in1k.safetensors" in text and "huggingface.co/timm/tf_efficientnet_b0.aa_in1k" in text
    message = missing_weights_message(["resnet18.tv_in1k", "skresnet18.ra_in1k", "tf_efficientnet_lite0"], tmp_path)
    models = [line for line in message.splitlines() if line.startswith("  ") and not line.startswith("    ")]
    assert models == ["  resnet18.tv_in1k:", "  skresnet18.ra_in1k:"]  # Lite0's weights ship in a package
    assert "resnet18.tv_in1k.pth: https://download.pytorch.org/models/resnet18" in message


def test_the_weights_folder_takes_renamed_files_and_a_hugging_face_cache(tmp_path):
    assert weights_in_folder("resnet18.tv_in1k", tmp_path) is None
    (tmp_path / "resnet18.tv_in1k.pth").write_bytes(b"")
    assert weights_in_folder("resnet18.tv_in1k", tmp_path) == str(tmp_path / "resnet18.tv_in1k.pth")
    assert weights_in_folder("resnet18", tmp_path) is None  # the bare name is timm 1.0's default tag, a1_in1k
    repo = tmp_path / "models--timm--skresnet18.ra_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "model.safetensors").write_bytes(b"")
    assert weights_in_folder("skresnet18.ra_in1k", tmp_path) == str(repo / "snapshots" / "abc123" / "model.safetensors")


def test_experiment_list_names_the_weights_each_run_needs(tmp_path, capsys):
    (tmp_path / "resnet18.tv_in1k.safetensors").write_bytes(b"")
    compare_architectures.main(["--data", "train.csv", "--weights-dir", str(tmp_path), "--list",
                                "--out", str(tmp_path / "out")])  # fmt: skip
    text = capsys.readouterr().out
    assert f"resnet18.tv_in1k                         {tmp_path / 'resnet18.tv_in1k.safetensors'}" in text
    assert "tf_efficientnet_b0.aa_in1k               MISSING from the weights folder" in text
    with refused(capsys, "skresnet18.ra_in1k.safetensors"):
        compare_architectures.main(["--data", "train.csv", "--weights-dir", str(tmp_path), "--out",
                                    str(tmp_path / "out"), "--no-progress", "--compile-cache", "off"])  # fmt: skip
    assert not (tmp_path / "out" / "runs").exists()  # refused before anything trained


def _reported_numbers() -> set[str]:
    """Every number the study reported, as the tables and the report print it."""
    readings = [study_results.FIG1, study_results.FIG2B, *study_results.TABLE1.values(),
                *study_results.TABLE2.values(), *study_results.TABLE3.values(), *study_results.TABLE4_MEMBERS.values(),
                study_results.TABLE4_AVERAGING, study_results.TABLE4_STACKED]  # fmt: skip
    values = {v for r in readings for v in (r.map5, r.map1) if v is not None}
    values |= {r.loss for r in readings if r.loss is not None and r.loss >= 0.01}  # 0.001-0.008 occur as other things
    return {f"{v:.3f}" for v in values}


def test_the_studys_numbers_are_typed_in_study_results_only():
    numbers = _reported_numbers()
    assert {"0.661", "0.694", "0.691", "0.704", "0.594", "0.734", "4.398"} <= numbers
    for path in sorted(Path(experiments.__file__).parent.glob("*.py")):
        if path.name != "study_results.py":
            typed = sorted(n for n in numbers if n in path.read_text())
            assert not typed, f"{path.name} types the study's {typed}: read them from experiments.study_results"


def _document(name: str, labels: list[str], epochs: int, test: list[float]) -> dict:
    history = [{"val_map@5": 0.1 * (e + 1) / epochs, "train_loss": 1.0 / (e + 1)} for e in range(epochs)]
    return {"experiment": name, "preset": {"name": "study"}, "settings": {label: {} for label in labels},
            "runs": [{"setting": label, "seed": 0, "history": history, "test": {"map@5": t, "map@5_se": 0.01}}
                     for label, t in zip(labels, test)]}  # fmt: skip


def test_the_report_quotes_the_study_from_study_results(monkeypatch):
    doc = _document("compare_optimizers", ["SGD", "SGD momentum 0.9", "Adam"], 2, [0.1, 0.2, 0.6])
    assert "Adam (0.694)" in report.compare_optimizers(doc)
    changed = {**study_results.TABLE2, ("adam", 0.0): study_results.Reading("Table 2", map5=0.123)}
    monkeypatch.setattr(study_results, "TABLE2", changed)
    assert "Adam (0.123)" in report.compare_optimizers(doc)


def test_the_report_prints_the_studys_epoch_7_readings_or_says_why_not():
    label, reading = report.EPOCH_READINGS["sweep_lr"]
    assert (label, reading.map5, reading.loss) == ("lr=1e-4", 0.691, 0.014)
    short = report.epoch_reading(_document("sweep_lr", [label], 5, [0.5]), label, reading)
    assert "the study MAP@5 0.691 and training loss 0.014" in short and "n/a: the run has 5 epochs" in short
    long = report.epoch_reading(_document("sweep_lr", [label], 20, [0.5]), label, reading)
    assert f"here validation MAP@5 {0.1 * 7 / 20:.3f} and training loss {1 / 7:.4f}" in long
    label, reading = report.EPOCH_READINGS["sweep_scheduler"]
    assert (label, reading.map5, reading.loss, reading.where) == ("lr=1e-4 cosine", 0.704, 0.003, "Fig. 2b")
    assert "0.661 in Table 1, 0.694 in Table 2 and 0.694 in Table 3" in study_results.disagreements()[0]


def test_tables_3_and_4_quote_every_row_of_the_study_whichever_rows_a_preset_trains(tmp_path):
    """The quick preset trains neither EfficientNet-B0 nor B3: their study numbers are still quoted, in the notes."""
    note = compare_architectures.EXPERIMENT.study_reference
    for architecture in study.ARCHITECTURES:
        reading = study_results.TABLE3[architecture.model.split(".")[0]]
        assert f"{architecture.label} {reading.map5:.3f}" in note
    assert "EfficientNet-B3 0.786 after 55 epochs (5 h)" in note
    document = {"title": "Table 4", "preset": {"description": "Preset **quick**"}, "members_from": "m", "seeds": [0],
                "per_seed": [{"data": "the test split"}], "rows": [], "command": "c", "wall_seconds": 1.0}  # fmt: skip
    table = ensemble.write_table(document, tmp_path / "table.md").read_text()
    for architecture in (a for a in study.ARCHITECTURES if a.ensemble_member):
        reading = study_results.TABLE4_MEMBERS[architecture.model.split(".")[0]]
        assert f"{architecture.label} {reading.map1:.3f}" in table
    assert "EfficientNet-B0 0.594" in table
    assert f"score averaging {study_results.TABLE4_AVERAGING.map1:.3f}" in table
