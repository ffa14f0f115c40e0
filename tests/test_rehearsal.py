"""The study rehearsed small: a study-shaped set (three images a class), the study preset's learning-rate sweep on
it from weights made here (one architecture, 32 px, two steps a run), and the report, which says the runs were cut
short. The same path as the full-size rehearsal, at a size the test suite affords."""

import json

import pytest
from flax import nnx

import knifejax as kj
from experiments import report, sweep_lr
from experiments.make_study_data import generate
from knifejax.models.weights_folder import full_name


@pytest.mark.slow
def test_the_study_preset_runs_bounded_on_a_study_shaped_set_and_the_report_says_so(tmp_path):
    data = tmp_path / "data"
    generate(data, images=576, test_images=16, max_side=48, progress=False)
    weights = tmp_path / "weights"
    weights.mkdir()
    kj.save_timm_weights(_seeded("resnet18"), weights / f"{full_name('resnet18')}.safetensors")
    runs = tmp_path / "runs"
    document = sweep_lr.main([
        "--data", str(data / "train.csv"), "--val-data", str(data / "test.csv"), "--root", str(data),
        "--weights-dir", str(weights), "--model", "resnet18", "--image-size", "32", "--max-steps", "2",
        "--out", str(runs / "sweep_lr-study"), "--cache-dir", str(tmp_path / "cache"), "--no-progress",
        "--compile-cache", "off",
    ])  # fmt: skip
    assert document["preset"]["name"] == "study" and document["preset"]["max_steps"] == 2
    assert len(document["runs"]) == 5
    for run in document["runs"]:
        assert [line["step"] for line in run["history"]] == [2] and run["status"] == "trained"
        cfg = json.loads((tmp_path / run["run_dir"] / "config.json").read_text())
        assert (cfg["batch_size"], cfg["epochs"], cfg["norm"], cfg["pretrained"]) == (32, 20, "imagenet", "default")
    table = (runs / "sweep_lr-study" / "table.md").read_text()
    assert "**every run cut to its first 2 optimizer steps** (`--max-steps 2`" in table

    page = report.main(["--preset", "study", "--runs", str(runs), "--out", str(tmp_path / "docs" / "results.md")])
    text = page.read_text()
    assert "**Rehearsal, not results:** the runs of sweep_lr were cut short by `--max-steps`" in text
    assert "**Bounded runs.** Every run stopped after at most 2 optimizer steps" in text
    assert report.NO_TEST in text  # the study preset scores no separate test set: no finding, and no crash


def _seeded(name: str) -> nnx.Module:
    """An ImageNet-shaped model with seeded weights: the stand-in for its pretrained weights file."""
    return kj.create_model(name, num_classes=1000, seed=0)
