"""Grad-CAM's contract beyond parity: no NaN on all-negative maps, the caller's model untouched, errors that
say what to fix, and overlays."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import knifejax as kj
from knifejax.explain import grad_cam
from knifejax.explain.overlay import denormalize, overlay, plot_grid
from knifejax.models.layers import Conv2d, Linear
from tests.cli_errors import refused
from tests.jitted import forward


class _NegativeEvidence(nnx.Module):
    """A positive activation map feeding a class whose weights are all negative: every Grad-CAM channel weight is
    negative, so the weighted sum is negative everywhere."""

    grad_cam_layer = "conv"

    def __init__(self):
        rngs = nnx.Rngs(0)
        self.conv = Conv2d(3, 4, 3, bias=True, rngs=rngs)
        self.conv.weight[...] = jnp.zeros_like(self.conv.weight[...])
        self.conv.bias[...] = jnp.ones((4,))
        self.head = Linear(4, 2, rngs=rngs)
        self.head.weight[...] = -jnp.ones((4, 2))

    def __call__(self, x):
        return self.head(jax.nn.relu(self.conv(x)).mean(axis=(1, 2)))


def test_all_negative_map_gives_zeros_not_nan():
    maps = np.asarray(grad_cam(_NegativeEvidence(), np.ones((2, 8, 8, 3), np.float32), targets=np.array([0, 1])))
    assert np.isfinite(maps).all()
    assert np.array_equal(maps, np.zeros((2, 8, 8), np.float32))


def test_model_mode_and_statistics_are_untouched():
    model = kj.create_model("resnet18", num_classes=4)
    model.train()
    before = jax.tree.map(np.array, nnx.state(model, nnx.BatchStat))
    x = np.random.default_rng(0).standard_normal((2, 96, 96, 3), dtype=np.float32)
    maps = np.asarray(grad_cam(model, x, layer="layer3"))
    assert model.bn1.use_running_average is False  # still in training mode
    after = jax.tree.map(np.array, nnx.state(model, nnx.BatchStat))
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)))
    model.eval()
    assert np.array_equal(maps, np.asarray(grad_cam(model, x, layer="layer3")))  # the same maps from an eval-mode model
    assert maps.min() == 0.0 and maps.max() == pytest.approx(1.0, abs=1e-6)


def test_a_wrong_layer_or_target_says_what_exists():
    model = kj.create_model("resnet18", num_classes=4)
    x = np.zeros((1, 32, 32, 3), np.float32)
    with pytest.raises(ValueError, match="has no module 'layer5'.*layer4"):
        grad_cam(model, x, layer="layer5")
    with pytest.raises(ValueError, match="layer4 has 2 entries, not '7'"):
        grad_cam(model, x, layer="layer4.7")
    with pytest.raises(ValueError, match=r"classes in 0..3"):
        grad_cam(model, x, targets=np.array([4]))
    with pytest.raises(ValueError, match="one class per image"):
        grad_cam(model, x, targets=np.array([1, 2]))


def test_overlay_blends_the_heat_map_over_the_denormalised_image():
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    image = denormalize(np.zeros((4, 6, 3), np.float32), mean, std)
    assert image.dtype == np.uint8 and (image == 128).all()
    cam = np.zeros((4, 6), np.float32)
    cam[:, 3:] = 1.0
    blended = overlay(image, cam)
    assert blended.shape == (4, 6, 3) and blended.dtype == np.uint8 and blended.max() == 255
    cold, hot = blended[0, 0], blended[0, 5]
    assert cold[2] > cold[0] and hot[0] > hot[2]  # jet: 0 is blue, 1 is red
    with pytest.raises(ValueError, match="differ in size"):
        overlay(image, cam[:, :5])


def test_plot_grid_writes_a_png(tmp_path):
    images = [np.full((16, 16, 3), 100, np.uint8)] * 3
    cams = [np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)] * 3
    path = plot_grid(images, cams, ["a", "b", "c"], tmp_path / "grid.png", columns=2, title="t")
    from PIL import Image

    assert Image.open(path).size[0] > 200


@pytest.mark.slow
def test_explain_images_batches_selects_and_writes(tmp_path):
    from knifejax.explain.batch import explain_images, write_explanations

    model = kj.create_model("resnet18", num_classes=3, seed=1)
    images = np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    x = (images / 255.0 - 0.5) / 0.25
    model.eval()
    expected_pred = np.asarray(forward(model, x.astype(np.float32))).argmax(-1)
    labels = np.array([expected_pred[0], (expected_pred[1] + 1) % 3, expected_pred[2], 0, 1])

    explained = explain_images(model, images, mean, std, labels, layer="layer3", batch_size=2)
    np.testing.assert_array_equal(explained.predicted, expected_pred)
    np.testing.assert_allclose(explained.maps[:2], np.asarray(grad_cam(model, x[:2], layer="layer3")), atol=1e-6)
    correct = explained.select("correct")
    failed = explained.select("failed")
    assert 0 in correct and 2 in correct and 1 in failed
    assert sorted([*correct, *failed]) == list(range(5))
    assert np.all(np.diff(explained.probability[failed]) <= 0)  # most confident mistakes first
    assert len(explained.select("failed", limit=1)) == 1

    written = write_explanations(explained, ["a", "b", "c"], tmp_path, which="failed", title="failures")
    assert written[-1].name == "grid.png" and len(written) == len(failed) + 1
    assert all(p.is_file() for p in written)
    with pytest.raises(ValueError, match="needs true labels"):
        explain_images(model, images[:1], mean, std, layer="layer3").select("failed")


@pytest.mark.slow
def test_cli_draws_failed_predictions_of_labelled_data_and_plain_images(tmp_path, capsys):
    from PIL import Image

    from knifejax.cli import main as cli_main
    from tests.run_dirs import write_untrained_run

    run = write_untrained_run(tmp_path / "run", "resnet18", 48, "imagenet", seed=0, pretrained=False, classes=4)
    out = tmp_path / "failed"
    cli_main(["gradcam", "--run", str(run), "--data", "synthetic", "--synthetic-classes", "4",
              "--synthetic-per-class", "8", "--select", "failed", "--limit", "3", "--layer", "layer3", "--out", str(out)])  # fmt: skip
    pictures = sorted(p.name for p in out.glob("*.png"))
    assert "grid.png" in pictures and len(pictures) == 4  # an untrained model fails on more than 3 of 8
    assert all(Image.open(out / name).size == (48, 48) for name in pictures if name != "grid.png")

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        Image.fromarray(np.full((30, 40, 3), 60 * i, np.uint8)).save(photos / f"p{i}.png")
    cli_main(["gradcam", "--run", str(run), str(photos), "--out", str(tmp_path / "plain")])
    assert sorted(p.name for p in (tmp_path / "plain").glob("*.png")) == ["0000_p0.png", "0001_p1.png", "grid.png"]
    with refused(capsys, "or labelled data"):
        cli_main(["gradcam", "--run", str(run), "--out", str(tmp_path / "none")])
