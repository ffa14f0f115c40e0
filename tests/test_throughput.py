"""benchmarks.throughput end to end at a tiny size (knifejax against torch eager), and its docs table (written in this
process; each framework's timed steps run in a child process of their own, as the benchmark runs them)."""

import contextlib
import io
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import throughput

pytestmark = pytest.mark.slow  # benchmark subprocesses, each starting JAX (and torch)

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--model", "resnet18", "--batch-size", "2", "--image-size", "32", "--steps", "2", "--warmup", "1"]


@pytest.fixture(scope="module")
def result(tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("results") / "tiny.json"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # each framework's steps run in a child of their own
        throughput.main([*TINY, "--mode", "train", "--rounds", "1", "--frameworks", "knifejax,torch", "--json", str(path)])
    assert "knifejax" in printed.getvalue() and "torch" in printed.getvalue()
    return json.loads(path.read_text())


def test_end_to_end_json(result):
    assert (result["model"], result["mode"], result["batch_size"], result["image_size"]) == ("resnet18", "train", 2, 32)
    assert result["precision"] == "fp32" and result["device"] in ("cpu", "gpu")
    for framework in ("knifejax", "torch"):
        img_s = result[f"{framework}_img_s"]
        assert math.isfinite(img_s) and img_s > 0
        assert result[f"{framework}_compile_s"] > 0
        assert result[f"{framework}_peak_mem_bytes"] > 0
        assert result[f"{framework}_error"] is None
    assert result["ratio"] == pytest.approx(result["knifejax_img_s"] / result["torch_img_s"])
    assert result["torch_compile_img_s"] is None and result["ratio_compile"] is None
    assert result["flops_per_step"] > 0
    assert len(result["rounds"]) == 1 and set(result["rounds"][0]) == {"knifejax", "torch"}
    # one round: the per-round median is the median over all timed steps
    assert result["knifejax_img_s"] == pytest.approx(2 / result["rounds"][0]["knifejax"])
    assert result["torch_setup"]["memory_format"] == "channels_last"
    assert set(result["versions"]) >= {"jax", "jaxlib", "torch", "timm"}


def test_table_only_rewrites_between_markers(result, tmp_path):
    (tmp_path / "tiny.json").write_text(json.dumps(result))
    docs = tmp_path / "performance.md"
    before, after = "# Log\n\nIntro.\n\n", "\n\n## Older entry\n\nkept as it was.\n"
    docs.write_text(f"{before}{throughput.BEGIN}\nstale table\n{throughput.END}{after}")
    throughput.main(["--table-only", "--json-dir", str(tmp_path), "--docs", str(docs)])
    text = docs.read_text()
    assert text.startswith(before + throughput.BEGIN) and text.endswith(throughput.END + after)
    block = text[len(before) + len(throughput.BEGIN) : -len(throughput.END + after)]
    assert "stale table" not in block
    assert f"| {result['gpu'] or 'CPU'} | `resnet18` | train | fp32 |" in block
    assert f"{result['ratio']:.2f}×" in block and result["versions"]["jax"] in block
    # regenerating is idempotent
    throughput.main(["--table-only", "--json-dir", str(tmp_path), "--docs", str(docs)])
    assert docs.read_text() == text


@pytest.mark.parametrize(
    "text", ["no markers\n", f"{throughput.BEGIN}\nonly the start\n", f"{throughput.END}\n{throughput.BEGIN}\n"]
)
def test_missing_or_misordered_markers_are_an_error(text):
    with pytest.raises(ValueError, match="throughput-table:begin"):
        throughput.replace_block(text, "table")


def test_table_only_reports_missing_markers(result, tmp_path):
    (tmp_path / "tiny.json").write_text(json.dumps(result))
    docs = tmp_path / "performance.md"
    docs.write_text("# Log without markers\n")
    with pytest.raises(SystemExit, match=f"^{re.escape(str(docs))}: .*throughput-table:begin"):
        throughput.main(["--table-only", "--json-dir", str(tmp_path), "--docs", str(docs)])
    assert docs.read_text() == "# Log without markers\n"


def test_unknown_model_lists_the_known_names():
    with pytest.raises(SystemExit, match="unknown model 'resnet19'; knifejax has: .*resnet18"):
        throughput.main(["--model", "resnet19", "--frameworks", "knifejax"])


def test_failed_framework_is_reported_not_raised(tmp_path, capsys):
    """A framework whose child fails (here: an image too small for ViT's patches) becomes an error entry."""
    path = tmp_path / "fail.json"
    args = ["--model", "vit_small_patch16_224", "--batch-size", "1", "--image-size", "8", "--steps", "1"]
    throughput.main([*args, "--warmup", "0", "--rounds", "1", "--frameworks", "knifejax", "--json", str(path)])
    result = json.loads(path.read_text())
    assert result["knifejax_img_s"] is None and result["knifejax_error"]
    assert "error" in capsys.readouterr().out


def test_profile_step_sums_the_traced_operations_of_the_train_step(tmp_path):
    """In a process of its own (the trace records every thread of the process it runs in)."""
    path = tmp_path / "profile.json"
    command = [sys.executable, "-m", "benchmarks.profile_step", *TINY[:6], "--steps", "2", "--top", "3"]
    proc = subprocess.run([*command, "--json", str(path)], capture_output=True, text=True, cwd=ROOT, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "s per step" in proc.stdout and "operation kind" in proc.stdout
    result = json.loads(path.read_text())
    kinds = result["kinds"]
    assert result["wall_s"] > 0 and sum(k["thread_s"] for k in kinds.values()) > 0
    # One step of a ResNet: its BatchNorm and ReLU fusions appear with whole numbers of calls per step, and no
    # runtime span (thread pools, the executor) or python frame is counted as an operation.
    fractional = {name: k["calls"] for name, k in kinds.items() if abs(k["calls"] - round(k["calls"])) > 1e-9}
    assert not fractional and all(k["calls"] >= 1 for k in kinds.values()), fractional
    assert not any("::" in name or name.startswith("$") for name in kinds)
