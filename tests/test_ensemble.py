"""Ensembles: averaging against numpy, the stacked head against chance, its features against the models,
the feature cache, save/load, mismatched classes, and the CLI.

The members are two run directories written without training (training costs tens of seconds per model
here): an EfficientNet-Lite0 with its ImageNet weights at 96 px (model normalisation, 0.5/0.5) and a
randomly initialised ResNet-18 at 32 px (ImageNet normalisation) — two models, sizes and normalisations.
"""

import json
import os
import shutil

import jax
import numpy as np
import pytest
from flax import nnx

from knifejax.cli import main as cli_main
from knifejax.data import SyntheticKnives
from knifejax.ensemble import DataSpec, EnsembleError, average_scores, build_ensemble, load_ensemble
from knifejax.ensemble import features as features_module
from knifejax.metrics import chance_map_at_k, ranking_metrics
from knifejax.train.run import load_run
from tests.run_dirs import write_untrained_run

CLASSES = 8
TEST = DataSpec("synthetic", synthetic_per_class=40)  # the synthetic test split: 10 images per class
CHANCE_MAP1, CHANCE_MAP5 = chance_map_at_k(CLASSES, 1), chance_map_at_k(CLASSES, 5)


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_average_scores_equals_numpy_with_weights_and_geometric_mean():
    rng = np.random.default_rng(0)
    logits = [rng.normal(size=(6, 5)) * 3 for _ in range(3)]
    probs = [_softmax(z) for z in logits]
    w = np.array([1.0, 2.0, 5.0]) / 8.0

    np.testing.assert_allclose(average_scores(logits), sum(probs) / 3, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(average_scores(logits, [1, 2, 5]), sum(wi * p for wi, p in zip(w, probs)), rtol=1e-5)
    geometric = np.prod([p**wi for wi, p in zip(w, probs)], axis=0)
    geometric /= geometric.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(average_scores(logits, [1, 2, 5], geometric=True), geometric, rtol=1e-5)
    # a member that rules a class out vetoes it in the geometric mean, not in the arithmetic one
    veto = [np.array([[0.0, 0.0]]), np.array([[0.0, -30.0]])]
    assert average_scores(veto)[0, 1] > 0.2 and average_scores(veto, geometric=True)[0, 1] < 1e-6
    with pytest.raises(ValueError, match="2 weights for 3 members"):
        average_scores(logits, [1, 2])


def _write_run(path, model_name, size, norm, seed, pretrained):
    return write_untrained_run(path, model_name, size, norm, seed, pretrained, CLASSES)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ensemble_runs")
    lite0 = _write_run(root / "lite0", "tf_efficientnet_lite0", 96, "model", 0, pretrained=True)
    r18 = _write_run(root / "r18", "resnet18", 32, "imagenet", 0, pretrained=False)
    return lite0, r18


@pytest.fixture(scope="module")
def stacked(runs, tmp_path_factory):
    """A stacked ensemble saved to a directory, with every call to the feature extractor counted."""
    out = tmp_path_factory.mktemp("ensembles") / "stacked"
    calls = []
    original = features_module.extract
    features_module.extract = lambda member, split, batch_size=32: calls.append(member.name) or original(
        member, split, batch_size
    )
    try:
        ensemble = build_ensemble(runs, "stacked", out=out, log=lambda message: None)
        metrics = ensemble.evaluate(TEST)
    finally:
        features_module.extract = original
    return ensemble, out, calls, metrics


@pytest.mark.slow
def test_stacked_head_beats_chance_clearly(stacked):
    ensemble, out, calls, metrics = stacked
    assert ensemble.fit_info["images"] == CLASSES * 8  # the validation half of 16 images per class
    assert metrics["map@1"] > 2.5 * CHANCE_MAP1, metrics
    assert metrics["map@5"] > 1.5 * CHANCE_MAP5, metrics
    # each member ran once on the fitting images and once on the test images, nothing more
    assert sorted(calls) == ["lite0", "lite0", "r18", "r18"]


@pytest.mark.slow
def test_features_equal_each_members_pre_logits(stacked, runs):
    ensemble, *_ = stacked
    outputs, labels, _ = ensemble.member_outputs(TEST)
    for run, norm_mean, norm_std, (features, logits) in zip(
        runs, [(0.5,) * 3, (0.485, 0.456, 0.406)], [(0.5,) * 3, (0.229, 0.224, 0.225)], outputs
    ):
        model, cfg, _ = load_run(run)
        images = SyntheticKnives(CLASSES, 10, size=cfg.image_size, split="test")
        x = np.stack([images[i]["image"] for i in range(8)]).astype(np.float32) / 255.0
        x = (x - np.asarray(norm_mean, np.float32)) / np.asarray(norm_std, np.float32)
        direct = nnx.jit(lambda m, x: (m.forward_head(m.forward_features(x), pre_logits=True), m(x)))(model, x)
        assert features.shape == (len(labels), model.head_hidden_size)
        np.testing.assert_allclose(features[:8], direct[0], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(logits[:8], direct[1], rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_a_rebuild_reads_the_cached_features_without_running_a_model(stacked, runs, monkeypatch):
    ensemble, out, _, metrics = stacked
    cached = sorted((out / "features").glob("*.npy"))
    assert len(cached) == 8  # (features, logits) x 2 members x (validation, test)
    mtimes = [p.stat().st_mtime_ns for p in cached]

    def no_model(*args, **kwargs):
        raise AssertionError("a member ran although its features were cached")

    monkeypatch.setattr(features_module, "extract", no_model)
    again = build_ensemble(runs, "stacked", out=out, log=lambda message: None)
    assert again.evaluate(TEST) == metrics
    assert [p.stat().st_mtime_ns for p in cached] == mtimes


@pytest.mark.slow
def test_save_then_load_gives_identical_predictions(stacked, runs):
    ensemble, out, _, _ = stacked
    spec = json.loads((out / "ensemble.json").read_text())
    run = spec["members"][0]["run"]  # relative to the ensemble directory, so both can move together
    assert spec["method"] == "stacked" and not os.path.isabs(run) and (out / run).resolve() == runs[0].resolve()
    loaded = load_ensemble(out, log=lambda message: None)
    for a, b in zip(jax.tree.leaves(ensemble.stacker), jax.tree.leaves(loaded.stacker), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # raw images: nothing cached, so the loaded members compute them again
    images = [SyntheticKnives(CLASSES, 1, size=80, split="test")[i]["image"] for i in range(CLASSES)]
    np.testing.assert_array_equal(loaded.predict_proba(images), ensemble.predict_proba(images))
    probs = loaded.predict_proba(TEST)
    np.testing.assert_array_equal(probs, ensemble.predict_proba(TEST))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_members_with_other_class_names_are_refused(runs, tmp_path):
    other = tmp_path / "renamed"
    shutil.copytree(runs[1], other)
    names = json.loads((other / "classes.json").read_text())
    names[3] = "butter knife"
    (other / "classes.json").write_text(json.dumps(names))
    with pytest.raises(EnsembleError, match=rf"run {other} does not agree .* class 3 is 'butter knife' there"):
        build_ensemble([runs[0], other], log=lambda message: None)


@pytest.mark.slow
def test_cli_builds_and_evaluates_a_weighted_average(stacked, runs, tmp_path, capsys):
    _, stacked_dir, _, _ = stacked
    out = tmp_path / "average"
    shutil.copytree(stacked_dir / "features", out / "features")  # the cache is keyed by member and images only
    cli_main(["ensemble", "--run", str(runs[0]), "--run", str(runs[1]), "--weights", "1", "3", "--out", str(out),
              "--data", "synthetic", "--synthetic-per-class", "40"])  # fmt: skip
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"2 members on {CLASSES * 10} images from synthetic"
    assert printed[1].split() == ["MAP@1", "MAP@5", "acc@5"]
    assert printed[2].startswith(f"{runs[0]} (tf_efficientnet_lite0, 96px)")
    assert printed[3].startswith(f"{runs[1]} (resnet18, 32px)")
    assert printed[4].startswith("ensemble: average, weights 0.25 0.75")
    table = [[float(v) for v in line.split()[-3:]] for line in printed[2:5]]

    loaded = load_ensemble(out, log=lambda message: None)
    outputs, labels, _ = loaded.member_outputs(TEST)
    by_hand = 0.25 * _softmax(outputs[0][1]) + 0.75 * _softmax(outputs[1][1])
    np.testing.assert_allclose(loaded.predict_proba(TEST), by_hand, rtol=1e-5, atol=1e-7)
    for row, scores in zip(table, [outputs[0][1], outputs[1][1], by_hand]):
        expected = ranking_metrics(scores, labels)
        np.testing.assert_allclose(row, [expected["map@1"], expected["map@5"], expected["acc@5"]], atol=6e-5)
    assert (out / "ensemble.json").exists() and not (out / "stacker").exists()


def test_the_members_data_is_prepared_without_progress_bars_when_asked(monkeypatch):
    """`--no-progress` of the ensemble experiment reaches the members' data preparation (its bars filled the log)."""
    from types import SimpleNamespace

    from knifejax.ensemble import data as member_data

    asked = []
    monkeypatch.setattr(member_data, "prepare_data", lambda cfg, size, log, progress: asked.append(progress) or "data")
    member = SimpleNamespace(config="cfg", size=32, prepared=None)
    assert member_data.MemberData([member], progress=False).prepared(0) == "data" and asked == [False]
