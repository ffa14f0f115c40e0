"""TfdsSource on a tiny tfds dataset built here, as array_record, with no download and no TensorFlow."""

import io
import json
import pickle
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from knifejax.data.errors import DataError
from knifejax.data.tfds_source import TfdsSource

tfds = pytest.importorskip("tensorflow_datasets")

NAME = "knifejax_tiny_knives"
CLASS_NAMES = ["chef", "paring", "santoku"]
HEIGHT, WIDTH = 16, 12
# Images per class in each split, and the Image feature's channels in each config.
PER_CLASS = {"train": 4, "test": 1}
CHANNELS = {"gray": 1, "gray_alpha": 2, "rgb": 3, "rgba": 4}


def _generated(split: str, channels: int) -> tuple[list[np.ndarray], list[int]]:
    """The pixels and labels written for ``split``, by generation index; the seed makes them fixed."""
    rng = np.random.default_rng([list(PER_CLASS).index(split), channels])
    count = PER_CLASS[split] * len(CLASS_NAMES)
    images = [rng.integers(0, 256, (HEIGHT, WIDTH, channels), dtype=np.uint8) for _ in range(count)]
    return images, [index % len(CLASS_NAMES) for index in range(count)]


def _png(pixels: np.ndarray) -> bytes:
    """PNG bytes: tfds encodes arrays with TensorFlow, so the builder hands it encoded images."""
    buffer = io.BytesIO()
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(buffer, format="PNG")
    return buffer.getvalue()


class KnifejaxTinyKnives(tfds.core.GeneratorBasedBuilder):
    """Three classes of noise images, 16x12, stored with 1 to 4 channels (one config each)."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=name) for name in CHANNELS]

    def _info(self):
        # DatasetInfo directly: dataset_info_from_configs wants metadata files beside the module.
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(HEIGHT, WIDTH, CHANNELS[self.builder_config.name])),
                    "label": tfds.features.ClassLabel(names=CLASS_NAMES),
                    "index": tfds.features.Scalar(dtype=np.int64),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(split) for split in PER_CLASS}

    def _generate_examples(self, split):
        images, labels = _generated(split, CHANNELS[self.builder_config.name])
        for index, (pixels, label) in enumerate(zip(images, labels)):
            yield index, {"image": _png(pixels), "label": label, "index": index}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfds")
    for config in CHANNELS:
        KnifejaxTinyKnives(config=config, data_dir=root, file_format="array_record").download_and_prepare()
    return root


def _dataset_order(data_dir, config: str, split: str) -> list[int]:
    """Generation index of each item in the order tfds stored them (it shuffles by key)."""
    examples = tfds.data_source(f"{NAME}/{config}", split=split, data_dir=data_dir, download=False)
    return [int(example["index"]) for example in examples]


@pytest.fixture(params=["opencv", "pil"])
def tfds_decoder(request, monkeypatch):
    """tfds decodes with OpenCV where it is installed, else with Pillow; they differ in channels.

    For a gray + alpha PNG, OpenCV gives RGBA and Pillow two channels.
    """
    if request.param == "opencv":
        pytest.importorskip("cv2")
    decode = getattr(tfds.features.Image, f"decode_example_np_with_{request.param}")
    monkeypatch.setattr(
        tfds.features.Image, "decode_example_np", lambda feature, example: decode(feature, example, feature.shape[-1])
    )


@pytest.mark.parametrize("config", list(CHANNELS))
def test_items_are_the_generated_rgb_pixels_and_labels_in_dataset_order(data_dir, config, tfds_decoder):
    source = TfdsSource(f"{NAME}/{config}", split="train", data_dir=data_dir)
    images, labels = _generated("train", CHANNELS[config])
    order = _dataset_order(data_dir, config, "train")
    assert len(source) == len(images) == 12
    assert sorted(order) == list(range(12))
    assert source.class_names == CLASS_NAMES
    assert source.labels.dtype == np.int64
    np.testing.assert_array_equal(source.labels, np.asarray(labels)[order])
    for index, generated_index in enumerate(order):
        item = source[index]
        pixels = images[generated_index]
        expected = np.repeat(pixels[..., :1], 3, axis=-1) if pixels.shape[-1] <= 2 else pixels[..., :3]
        assert item["image"].dtype == np.uint8 and item["image"].shape == (HEIGHT, WIDTH, 3)
        assert item["image"].flags.writeable
        np.testing.assert_array_equal(item["image"], expected)
        assert item["label"] == labels[generated_index] and type(item["label"]) is int


def test_labels_are_read_without_decoding_images(data_dir, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("reading the labels decoded an image")

    source = TfdsSource(f"{NAME}/rgb", split="test", data_dir=data_dir)
    expected = np.asarray(_generated("test", 3)[1])[_dataset_order(data_dir, "rgb", "test")]
    monkeypatch.setattr(tfds.features.Image, "decode_example_np", refuse)  # labels are read on first use
    np.testing.assert_array_equal(source.labels, expected)


def test_split_slices_follow_tfds(data_dir):
    full = TfdsSource(f"{NAME}/rgb", split="train", data_dir=data_dir)
    half = TfdsSource(f"{NAME}/rgb", split="train[:50%]", data_dir=data_dir)
    assert len(half) == 6
    np.testing.assert_array_equal(half.labels, full.labels[:6])


def test_indices_behave_like_a_list(data_dir):
    source = TfdsSource(f"{NAME}/rgb", split="test", data_dir=data_dir)
    np.testing.assert_array_equal(source[-1]["image"], source[2]["image"])
    assert len(list(source)) == 3  # iteration stops at the IndexError
    with pytest.raises(IndexError):
        source[3]


def test_it_pickles_for_worker_processes(data_dir):
    source = TfdsSource(f"{NAME}/rgb", split="test", data_dir=data_dir)
    copy = pickle.loads(pickle.dumps(source))
    np.testing.assert_array_equal(copy[1]["image"], source[1]["image"])
    np.testing.assert_array_equal(copy.labels, source.labels)


def test_a_missing_split_lists_the_splits(data_dir):
    with pytest.raises(DataError, match=r"cannot read the split 'validation'.*its splits are \['test', 'train'\]"):
        TfdsSource(f"{NAME}/rgb", split="validation", data_dir=data_dir)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"image_key": "photo"}, r"no feature 'photo'; its features are image \(Image\), label \(ClassLabel\), "
         r"index \(Scalar\); pass the right one as image_key"),
        ({"label_key": "class"}, r"no feature 'class'.*as label_key"),
        ({"label_key": "index"}, r"'index' is of type Scalar, not ClassLabel.*of type ClassLabel as label_key"),
        ({"image_key": "label"}, r"'label' is of type ClassLabel, not Image.*of type Image as image_key"),
    ],
)
def test_a_wrong_key_lists_the_features(data_dir, keys, message):
    with pytest.raises(DataError, match=message):
        TfdsSource(f"{NAME}/rgb", data_dir=data_dir, **keys)


def test_an_unknown_dataset_says_to_check_the_name(tmp_path):
    with pytest.raises(DataError, match=r"no dataset 'knifejax_no_such_set'.*tfds.list_builders\(\).*check the name"):
        TfdsSource("knifejax_no_such_set", data_dir=tmp_path)


def test_an_unprepared_dataset_says_how_to_prepare_it(tmp_path):
    with pytest.raises(DataError, match=r"is not prepared in .*file_format='array_record'\)\.download_and_prepare\(\)"):
        TfdsSource(f"{NAME}/rgb", data_dir=tmp_path)


def test_a_dataset_prepared_without_random_access_says_to_prepare_array_record(data_dir, tmp_path):
    # Writing tfrecord files needs TensorFlow, so a copy's dataset_info.json is made to claim them.
    shutil.copytree(data_dir / NAME / "rgb", tmp_path / NAME / "rgb")
    info_path = tmp_path / NAME / "rgb" / "1.0.0" / "dataset_info.json"
    info = json.loads(info_path.read_text())
    info["fileFormat"] = "tfrecord"
    info_path.write_text(json.dumps(info))
    with pytest.raises(DataError, match=r"prepared in .* as tfrecord, which cannot be read by index.*array_record"):
        TfdsSource(f"{NAME}/rgb", data_dir=tmp_path)


def test_without_tensorflow_datasets_it_says_what_to_install(data_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(DataError, match=r"pip install 'knifejax\[tfds\]'"):
        TfdsSource(f"{NAME}/rgb", data_dir=data_dir)


def test_tfds_is_imported_lazily_and_tensorflow_never(data_dir):
    """In a fresh interpreter, where the builder class is unknown and tfds reads the files alone."""
    script = textwrap.dedent(
        f"""
        import sys
        import knifejax.data, knifejax.data.tfds_source
        assert "tensorflow_datasets" not in sys.modules, "importing knifejax.data imported tfds"
        source = knifejax.data.tfds_source.TfdsSource({NAME + "/gray"!r}, data_dir={str(data_dir)!r})
        assert source[0]["image"].shape == ({HEIGHT}, {WIDTH}, 3) and len(source.labels) == 12
        assert "tensorflow" not in sys.modules, "reading the source imported TensorFlow"
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
