"""The study rehearsed small: `experiments.rehearse_study` on a study-shaped set of three images a class, the study
preset's learning-rate sweep from stand-in weights made here (the test-only CNN of `tests.tiny_model`, 32 px, two steps
a run), and the report, which says the runs were cut short. The same command and path as the full-size rehearsal, at a
size the test suite affords: each step's process is `python -m tests.tiny_model -m STEP`, the step with the tiny CNN
registered."""

import json
import os
import re
from pathlib import Path

import jax
import pytest
from flax import nnx

from experiments import rehearse_study, report
from experiments.compare_vit import settings as vit_settings
from experiments.presets import PRESETS
from experiments.report import ORDER
from experiments.stand_in_weights import study_models
from knifejax import study
from knifejax.models.registry import create_model
from tests.tiny_model import TINY

ROOT = Path(__file__).resolve().parents[1]
SMALL_SET = ["--images", "576", "--test-images", "16", "--max-side", "48"]
TINY_STEP = ["tests.tiny_model", "-m"]


def test_the_stand_in_weights_cover_every_model_the_study_preset_loads():
    vits = [overrides["model"] for overrides in vit_settings(PRESETS["study"]).values()]
    assert study_models(ORDER) == [a.model for a in study.ARCHITECTURES] + vits


def test_a_flag_an_experiment_refuses_stops_the_rehearsal_before_it_writes_anything(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        rehearse_study.main([str(tmp_path / "out"), "--only", "sweep_lr", "--", "--lr", "1e-3"])
    assert stopped.value.code == 2
    assert "--lr does not apply to sweep_lr (preset study)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_failing_step_ends_the_rehearsal_in_one_line_naming_it_and_its_log(tmp_path, capsys):
    data = tmp_path / "out" / "data"
    data.mkdir(parents=True)
    (data / "mine.txt").write_text("a folder of the user's, not a data set the rehearsal began")
    with pytest.raises(SystemExit) as stopped:
        rehearse_study.main([str(tmp_path / "out"), *SMALL_SET, "--only", "sweep_lr"])
    assert stopped.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    log = tmp_path / "out" / "logs" / "data.log"
    assert error == (f"knifejax: error: data stopped (exit 2): knifejax: error: {data} holds other files; give an "
                     f"empty or new folder, or the same arguments to complete it — its whole output: {log}")  # fmt: skip
    assert not (tmp_path / "out" / "weights").exists()  # nothing after the failed step ran
    record = json.loads((tmp_path / "out" / "rehearsal.json").read_text())
    assert [(s["step"], s["exit"]) for s in record["steps"]] == [("data", 2)]


def test_a_failing_experiment_is_named_at_the_end_after_the_others_and_the_report_ran(tmp_path, monkeypatch, capsys):
    ran = []

    def fake_step(name, argv, log):
        ran.append(name)
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("...\nknifejax: error: one train step needs 29 GiB\n" if name == "sweep_lr" else "")
        return {"step": name, "seconds": 1.0, "peak_rss_bytes": 2**20, "exit": 2 if name == "sweep_lr" else 0}

    monkeypatch.setattr(rehearse_study, "run_step", fake_step)
    with pytest.raises(SystemExit) as stopped:
        rehearse_study.main([str(tmp_path / "out"), "--only", "sweep_lr,sweep_batch"])
    assert stopped.value.code == 2 and ran == ["data", "weights", "sweep_lr", "sweep_batch", "report"]
    said = capsys.readouterr()
    log = tmp_path / "out" / "logs" / "sweep_lr.log"
    assert said.err == (f"knifejax: error: 1 of 2 experiments failed; the first, sweep_lr stopped (exit 2): knifejax: "
                        f"error: one train step needs 29 GiB — its whole output: {log}\n")  # fmt: skip
    assert said.out.endswith(f"  sweep_lr stopped (exit 2): knifejax: error: one train step needs 29 GiB — its whole "
                             f"output: {log}\n")  # fmt: skip
    assert "| sweep_lr, failed (exit 2) |" in (tmp_path / "out" / "rehearsal.md").read_text()


def test_a_damaged_record_of_earlier_starts_is_one_line_before_anything_runs(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "rehearsal.json").write_text('{"steps": [{"step": "data"')
    with pytest.raises(SystemExit) as stopped:
        rehearse_study.main([str(tmp_path / "out"), "--only", "sweep_lr"])
    assert stopped.value.code == 2 and not (tmp_path / "out" / "logs").exists()
    assert "rehearsal.json is not a record this command wrote (damaged or edited); delete it" in capsys.readouterr().err


def test_ctrl_c_during_a_step_records_its_time_and_stops_saying_the_same_command_resumes(tmp_path, monkeypatch, capsys):
    ran = []

    def interrupted_step(name, argv, log):  # run_step returns what the step's process ended with: Ctrl-C's 130
        ran.append(name)
        return {"step": name, "seconds": 9.0, "peak_rss_bytes": 2**20, "exit": 130 if name == "sweep_lr" else 0}

    monkeypatch.setattr(rehearse_study, "run_step", interrupted_step)
    with pytest.raises(SystemExit) as stopped:
        rehearse_study.main([str(tmp_path / "out"), "--only", "sweep_lr,sweep_batch"])
    assert stopped.value.code == 130 and ran == ["data", "weights", "sweep_lr"]
    assert capsys.readouterr().err == "knifejax: interrupted; the same command resumes\n"
    assert "| sweep_lr, interrupted | 9 s |" in (tmp_path / "out" / "rehearsal.md").read_text()


def test_a_second_rehearsal_in_the_same_folder_stops_at_once_naming_the_first(tmp_path, capsys):
    from knifejax.folder_lock import held

    out = tmp_path / "out"
    with held(out, "rehearsed", "give another OUT"), pytest.raises(SystemExit) as stopped:
        rehearse_study.main([str(out), "--only", "sweep_lr"])
    assert stopped.value.code == 2 and not (out / "logs").exists()
    assert f"{out} is being rehearsed by process {os.getpid()}" in capsys.readouterr().err


def test_a_second_start_adds_its_time_to_each_step_and_keeps_the_steps_it_did_not_reach():
    earlier = [{"step": "data", "seconds": 100.0, "peak_rss_bytes": 5, "exit": 0},
               {"step": "sweep_batch", "seconds": 80.0, "peak_rss_bytes": 7, "exit": 0, "runs": {"trained": 3}},
               {"step": "sweep_lr", "seconds": 50.0, "peak_rss_bytes": 9, "exit": 1}]  # fmt: skip
    now = [{"step": "data", "seconds": 1.0, "peak_rss_bytes": 3, "exit": 0},
           {"step": "sweep_batch", "seconds": 2.0, "peak_rss_bytes": 1, "exit": 0, "runs": {"finished before": 3}}]
    assert rehearse_study.with_earlier_starts(now, earlier) == [
        {"step": "data", "seconds": 101.0, "peak_rss_bytes": 5, "exit": 0, "starts": 2},
        {"step": "sweep_batch", "seconds": 82.0, "peak_rss_bytes": 7, "exit": 0, "starts": 2, "runs": {"trained": 3}},
        earlier[2],
    ]


@pytest.mark.slow
@pytest.mark.usefixtures("tiny_model")  # the rehearsal reads --model's weights needs here, before its steps start
def test_the_study_preset_rehearses_from_one_command_and_the_report_says_so(tmp_path, monkeypatch):
    run_step = rehearse_study.run_step
    monkeypatch.setattr(rehearse_study, "run_step", lambda name, argv, log: run_step(name, [*TINY_STEP, *argv], log))
    monkeypatch.chdir(ROOT)  # where `python -m tests.tiny_model` is found
    out = tmp_path / "rehearsal"
    record = rehearse_study.main([
        str(out), *SMALL_SET, "--max-steps", "2", "--only", "sweep_lr",
        "--", "--model", TINY, "--image-size", "32", "--compile-cache", "off",
    ])  # fmt: skip
    assert [s["step"] for s in record["steps"]] == ["data", "weights", "sweep_lr", "report"]
    assert all(s["exit"] == 0 and s["seconds"] > 0 and s["peak_rss_bytes"] > 2**20 for s in record["steps"])
    assert record["steps"][2]["runs"] == {"trained": 5}
    assert [p.name for p in (out / "weights").iterdir()] == [f"{TINY}.test.safetensors"]  # --model's default tag

    document = json.loads((out / "runs" / "sweep_lr-study" / "results.json").read_text())
    assert document["preset"]["name"] == "study" and document["preset"]["max_steps"] == 2
    for run in document["runs"]:
        assert [line["step"] for line in run["history"]] == [2] and run["status"] == "trained"
        cfg = json.loads((Path(run["run_dir"]) / "config.json").read_text())
        assert (cfg["batch_size"], cfg["epochs"], cfg["norm"], cfg["pretrained"]) == (32, 20, "imagenet", "default")
    table = (out / "runs" / "sweep_lr-study" / "table.md").read_text()
    assert "**every run cut to its first 2 optimizer steps** (`--max-steps 2`" in table

    text = (out / "results.md").read_text()
    assert "**Rehearsal, not results:** the runs of sweep_lr were cut short by `--max-steps`" in text
    assert "**Bounded runs.** Every run stopped after at most 2 optimizer steps" in text
    assert f"**Finding.** {report.BY_VALIDATION}" in text  # the study preset has no test set: its validation scores
    assert "lr=1e-4 (0.0" in text and "±" in text  # each rate's final validation MAP@5 with its standard error

    (checkpoints,) = record["checkpoints"]
    assert (checkpoints["model"], checkpoints["optimizer"], checkpoints["runs"]) == (TINY, "adam", 5)
    on_disk = sorted(rehearse_study.folder_bytes(folder)
                     for folder in (out / "runs" / "sweep_lr-study" / "runs").glob("*/seed0/checkpoints"))
    assert len(on_disk) == 5 and checkpoints["checkpoint_bytes"] == on_disk[2]  # the median run's
    parameters = sum(leaf.size for leaf in jax.tree.leaves(nnx.state(create_model(TINY, num_classes=192), nnx.Param)))
    assert checkpoints["checkpoint_bytes"] > 4 * 4 * parameters  # latest: parameters, two Adam moments; best: the first
    page = (out / "rehearsal.md").read_text()
    assert re.search(r"\| sweep_lr \| \d+ (min \d\d )?s \| [\d.]+ [MG]iB \| 5 trained \|", page), page
