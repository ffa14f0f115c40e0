"""The study-shaped data set: its plan at full size, and a small one written, deterministic, of mixed formats,
loaded through the CSV path as the study's files are."""

import collections
import csv
from pathlib import Path

import pytest
from PIL import Image

from experiments import make_study_data
from experiments.make_study_data import PHOTO_SIZES, generate, plan
from knifejax.data.synthetic import class_names
from knifejax.errors import ConfigError
from knifejax.train.config import TrainConfig
from knifejax.train.data_setup import prepare_data

SMALL = dict(images=576, test_images=24, seed=0, max_side=64)  # three images a class on average


def _rows(path: Path) -> list[tuple[str, int]]:
    with path.open(newline="") as file:
        reader = csv.reader(file)
        assert next(reader) == ["Id", "Label"]
        return [(id_, int(label)) for id_, label in reader]


def test_the_full_size_plan_has_the_studys_shape():
    pictures = plan(9624, 351, seed=0, max_side=None)
    train = [p for p in pictures if p.id.startswith("./Train/")]
    test = [p for p in pictures if p.id.startswith("./Test/")]
    assert (len(train), len(test), len({p.label for p in test})) == (9624, 351, 109)
    assert {p.label for p in train} == set(range(192))
    assert len({p.id for p in pictures}) == len(pictures)
    assert 0.08 < sum(p.brightened for p in train) / len(train) < 0.15
    originals = {p.id for p in train if not p.brightened}
    assert all(p.id.replace("_br.", ".") in originals for p in train if p.brightened)
    shapes = {(p.width, p.height) for p in pictures}
    assert shapes <= set(PHOTO_SIZES) | {(h, w) for w, h in PHOTO_SIZES}
    assert any(w < h for w, h in shapes) and any(w > h for w, h in shapes)
    per_class = collections.Counter(p.label for p in train)
    assert min(per_class.values()) >= 1 and max(per_class.values()) > 2 * min(per_class.values())  # uneven
    assert plan(9624, 351, seed=0, max_side=None) == pictures and plan(9624, 351, seed=1, max_side=None) != pictures


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("study-shaped") / "set"
    return out, generate(out, **SMALL, progress=False)


@pytest.mark.slow
def test_a_small_set_is_written_deterministically_in_the_studys_layout(small_set):
    out, summary = small_set
    train, test = _rows(out / "train.csv"), _rows(out / "test.csv")
    assert (len(train), len(test), summary["test_classes"]) == (576, 24, 24)
    folders = sorted(p.name for p in (out / "Train").iterdir())
    assert folders == sorted(make_study_data.folder_name(name) for name in class_names())
    assert all(id_.startswith("./Train/") and (out / id_).is_file() for id_, _ in train)
    assert any(id_.endswith("_br.JPEG") for id_, _ in train)
    pictures = plan(SMALL["images"], SMALL["test_images"], SMALL["seed"], SMALL["max_side"])
    for picture in pictures[::50]:  # each file is its picture's bytes, drawn again
        assert (out / picture.id).read_bytes() == make_study_data.encode(picture, SMALL["seed"])
    generate(out, **SMALL, progress=False)  # the same arguments again: the set is complete, nothing changes
    with pytest.raises(ConfigError, match="was made with"):
        generate(out, **{**SMALL, "seed": 1}, progress=False)


@pytest.mark.slow
def test_a_small_set_has_the_mixed_formats_of_real_photos(small_set):
    out, _ = small_set
    seen = collections.Counter()
    for id_, _ in _rows(out / "train.csv") + _rows(out / "test.csv"):
        with Image.open(out / id_) as image:
            turned = image.format == "JPEG" and image.getexif().get(0x0112) == 6
            seen[(image.format, image.mode, turned)] += 1
    for kind in [("JPEG", "RGB", False), ("JPEG", "RGB", True), ("JPEG", "L", False), ("JPEG", "CMYK", False),
                 ("PNG", "RGB", False), ("PNG", "RGBA", False)]:  # fmt: skip
        assert seen[kind] > 0, (kind, seen)


@pytest.mark.slow
def test_a_small_set_loads_through_the_csv_path(small_set, tmp_path):
    out, _ = small_set
    cfg = TrainConfig(data=str(out / "train.csv"), val_data=str(out / "test.csv"), root=str(out), image_size=32,
                      cache_dir=str(tmp_path / "cache"))  # fmt: skip
    data = prepare_data(cfg, 32, log=lambda m: None, progress=False)
    assert data.class_names == [make_study_data.folder_name(name) for name in class_names()]
    assert (len(data.train.indices), len(data.val.indices)) == (576, 24)
    assert data.report["train"]["skipped"] == data.report["val"]["skipped"] == 0
    assert sorted(data.val.labels.tolist()) == sorted(label for _, label in _rows(out / "test.csv"))
