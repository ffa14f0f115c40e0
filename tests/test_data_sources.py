"""Decoding with the study baseline's cv2 semantics, CSV/folder sources, validation and splits."""

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from knifejax.data.decode import load_rgb
from knifejax.data.sources import CsvSource, ImageFolderSource, Subset, stratified_split
from knifejax.data import DataError, validate
from knifejax.data.cache import decode_source
from knifejax.train.config import TrainConfig
from knifejax.train.data_setup import prepare_data

# Quadrants of the stored (un-rotated) image in the EXIF test, 16-pixel blocks so JPEG keeps them.
_RED, _GREEN, _BLUE, _WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def _save(path: Path, image: Image.Image, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return path


def _noise(height: int = 32, width: int = 48, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _truncated_jpeg(path: Path) -> Path:
    _save(path, _noise(64, 64), format="JPEG", quality=90)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _quadrants() -> np.ndarray:
    image = np.zeros((32, 48, 3), np.uint8)
    image[:16, :24], image[:16, 24:], image[16:, :24], image[16:, 24:] = _RED, _GREEN, _BLUE, _WHITE
    return image


def _rotated_exif() -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the stored image must be turned 90 degrees clockwise
    return exif


def _write_csv(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(["Id,Label", *lines]) + "\n")
    return path


# --- load_rgb -------------------------------------------------------------------------------------


def test_alpha_is_dropped_keeping_the_raw_colours(tmp_path):
    rgba = np.array([[[10, 20, 30, 0], [200, 100, 50, 128]]], np.uint8)
    image = load_rgb(_save(tmp_path / "rgba.png", Image.fromarray(rgba, "RGBA")))
    assert image.dtype == np.uint8 and image.shape == (1, 2, 3)
    np.testing.assert_array_equal(image, rgba[..., :3])


def test_16_bit_keeps_the_high_byte_like_cv2(tmp_path):
    values = np.array([[0xABCD, 0x12FF, 0x00FF, 0xFFFF]], np.uint16)
    source = Image.fromarray(values)
    assert source.mode == "I;16"
    image = load_rgb(_save(tmp_path / "gray16.png", source))
    np.testing.assert_array_equal(image[..., 0], [[0xAB, 0x12, 0x00, 0xFF]])  # >> 8, not rounded
    np.testing.assert_array_equal(image, np.repeat(image[..., :1], 3, axis=-1))


def test_grayscale_palette_and_1_bit(tmp_path):
    gray = np.array([[0, 7, 255]], np.uint8)
    image = load_rgb(_save(tmp_path / "gray.png", Image.fromarray(gray)))
    np.testing.assert_array_equal(image, np.stack([gray] * 3, -1))

    palette = Image.fromarray(np.array([[0, 1]], np.uint8), "P")
    palette.putpalette([10, 20, 30, 40, 50, 60])
    image = load_rgb(_save(tmp_path / "palette.png", palette, transparency=0))  # transparency ignored
    np.testing.assert_array_equal(image, [[[10, 20, 30], [40, 50, 60]]])

    bits = Image.fromarray(np.array([[False, True]]))
    assert bits.mode == "1"
    image = load_rgb(_save(tmp_path / "bits.png", bits))
    np.testing.assert_array_equal(image, [[[0, 0, 0], [255, 255, 255]]])


def test_cmyk_jpeg_uses_cv2s_conversion(tmp_path):
    cmyk = np.zeros((16, 32, 4), np.uint8)
    cmyk[:, :16] = (0, 255, 255, 0)  # red
    cmyk[:, 16:] = (0, 0, 0, 128)  # grey
    path = _save(tmp_path / "cmyk.jpg", Image.fromarray(cmyk, "CMYK"), format="JPEG", quality=95)
    image = load_rgb(path)
    with Image.open(path) as decoded:
        assert decoded.mode == "CMYK"
        c, m, y, k = np.moveaxis(np.asarray(decoded).astype(np.int32), -1, 0)
        pillow_rgb = np.asarray(decoded.convert("RGB")).astype(np.int32)
    cv2_rgb = np.stack([(255 - k) - ((channel * (255 - k)) >> 8) for channel in (c, m, y)], -1)
    np.testing.assert_array_equal(image, cv2_rgb)
    assert np.abs(image - pillow_rgb).max() <= 2
    np.testing.assert_allclose(image[8, 8], _RED, atol=3)
    np.testing.assert_allclose(image[8, 24], (127, 127, 127), atol=3)


def test_exif_orientation_6_is_rotated_clockwise(tmp_path):
    stored = Image.fromarray(_quadrants())
    path = _save(tmp_path / "rotated.jpg", stored, format="JPEG", quality=95, exif=_rotated_exif())
    image = load_rgb(path)
    with Image.open(path) as decoded:  # the stored pixels, orientation not applied
        reference = np.rot90(np.asarray(decoded.convert("RGB")), k=-1)
    assert image.shape == (48, 32, 3)
    np.testing.assert_array_equal(image, reference)
    # Clockwise: the stored bottom-left goes to the top-left, the stored top-left to the top-right.
    corners = {(4, 4): _BLUE, (4, -5): _RED, (-5, 4): _WHITE, (-5, -5): _GREEN}
    for (row, column), colour in corners.items():
        np.testing.assert_allclose(image[row, column], colour, atol=8, err_msg=f"pixel {row, column}")


def test_truncated_jpeg_raises_even_when_pillow_is_told_to_load_truncated_images(tmp_path, monkeypatch):
    path = _truncated_jpeg(tmp_path / "truncated.jpg")
    with pytest.raises(DataError, match=r"truncated\.jpg: the file is truncated"):
        load_rgb(path)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(DataError, match="no JPEG end-of-image marker"):
        load_rgb(path)


def test_files_missing_their_last_bytes_are_truncated(tmp_path):
    jpeg = _save(tmp_path / "whole.jpg", _noise(), format="JPEG")
    png = _save(tmp_path / "whole.png", _noise(), format="PNG")
    load_rgb(jpeg), load_rgb(png)
    jpeg.write_bytes(jpeg.read_bytes()[:-2])  # Pillow decodes every pixel, but the end marker is gone
    png.write_bytes(png.read_bytes()[:-12])
    with pytest.raises(DataError, match="whole.jpg: the file is truncated"):
        load_rgb(jpeg)
    with pytest.raises(DataError, match="whole.png: the file is truncated"):
        load_rgb(png)


def test_missing_and_non_image_files(tmp_path):
    with pytest.raises(DataError, match=r"nothing\.jpg: no such file"):
        load_rgb(tmp_path / "nothing.jpg")
    (tmp_path / "notes.jpg").write_text("not an image")
    with pytest.raises(DataError, match=r"notes\.jpg: not a readable image"):
        load_rgb(tmp_path / "notes.jpg")


# --- CsvSource and validate -------------------------------------------------------------------------


@pytest.fixture
def study_csv(tmp_path) -> Path:
    """The study's layout, 9 rows: row 8 a truncated JPEG, row 9 a missing file, row 10 labelled 192."""
    train = tmp_path / "Train"
    _save(train / "Alpha" / "rgba.png", Image.fromarray(np.full((8, 8, 4), 99, np.uint8), "RGBA"))
    _save(train / "Alpha" / "gray.png", Image.fromarray(np.full((8, 8), 5, np.uint8)))
    _save(train / "Beta" / "cmyk.jpg", Image.new("CMYK", (8, 8), (0, 255, 255, 0)), format="JPEG")
    _save(train / "Beta" / "gray16.png", Image.fromarray(np.full((8, 8), 0xABCD, np.uint16)))
    _save(train / "Gamma" / "exif.jpg", Image.fromarray(_quadrants()), format="JPEG", exif=_rotated_exif())
    _save(train / "Gamma" / "palette.png", Image.new("P", (8, 8), 3))
    _truncated_jpeg(train / "Delta" / "truncated.jpg")
    _save(train / "Omega" / "IMG_4107.JPEG", _noise(), format="JPEG")
    rows = [
        "./Train/Alpha/rgba.png,0",
        "./Train/Alpha/gray.png,0",
        "./Train/Beta/cmyk.jpg,1",
        "./Train/Beta/gray16.png,1",
        "./Train/Gamma/exif.jpg,2",
        "./Train/Gamma/palette.png,2",
        "./Train/Delta/truncated.jpg,3",
        "./Train/Delta/missing.jpg,3",
        "./Train/Omega/IMG_4107.JPEG,192",
    ]
    return _write_csv(tmp_path / "train.csv", rows)


def test_one_error_lists_every_problem_with_its_row(study_csv):
    source = CsvSource(study_csv)
    with pytest.raises(DataError) as caught:
        validate(source, num_classes=192)
    message = str(caught.value)
    assert "\n" not in message and "3 problem(s) among the 9 items of the data" in message and str(study_csv) in message
    assert "the first: row 8:" in message and "--skip-bad" in message
    assert len(caught.value.details) == 3, caught.value.details
    truncated, missing, out_of_range = caught.value.details
    assert "row 8:" in truncated and "truncated.jpg: the file is truncated" in truncated
    assert "row 9:" in missing and "missing.jpg: no such file" in missing
    assert "row 10:" in out_of_range and "IMG_4107.JPEG: the label 192 is outside [0, 192)" in out_of_range


def test_skip_bad_keeps_the_rest(study_csv):
    source = CsvSource(study_csv)
    seen = []
    report = validate(source, num_classes=192, skip_bad=True, progress=lambda *args: seen.append(args))
    assert len(report.problems) == 3 and report.num_bad == 3
    assert [problem.row for problem in report.problems] == [8, 9, 10]
    np.testing.assert_array_equal(report.good, np.arange(6))
    assert seen[-1] == (9, 9) and len(seen) == 9
    kept = Subset(source, report.good)
    assert len(kept) == 6 and validate(kept, num_classes=192).num_bad == 0
    for index in range(len(kept)):
        item = kept[index]
        assert item["image"].dtype == np.uint8 and item["image"].ndim == 3 and item["image"].shape[-1] == 3
        assert item["label"] == kept.labels[index]
    assert kept[4]["image"].shape == (48, 32, 3)  # EXIF-rotated


def _counting_decodes(monkeypatch) -> list[Path]:
    """Every file `load_rgb` decodes from here on, wherever it is called from."""
    decoded = []

    def counting(path, *args):
        decoded.append(Path(path))
        return load_rgb(path, *args)

    for module in ("knifejax.data.validate", "knifejax.data.sources"):  # the package's `validate` hides its module
        monkeypatch.setattr(sys.modules[module], "load_rgb", counting)
    return decoded


@pytest.mark.parametrize("cached", [True, False])
def test_a_first_start_checks_and_decodes_each_file_once(study_csv, tmp_path, monkeypatch, cached):
    """prepare_data's first start: each file decoded once, checked and cached in one pass; the same images and
    report as the check and the decoding done apart; a second start decodes nothing."""
    cache = tmp_path / "cache" if cached else None
    cfg = TrainConfig(data=str(study_csv), val_data=str(study_csv), allow_duplicates=True, skip_bad=True,
                      cache_dir=None if cache is None else str(cache))  # fmt: skip
    decoded = _counting_decodes(monkeypatch)
    data = prepare_data(cfg, 16, log=lambda m: None, progress=False)
    source = CsvSource(study_csv)
    # each file once (the missing one tried); with a cache the validation role, the same CSV, finds it there
    assert sorted(decoded) == sorted(source.paths * (1 if cached else 2))
    report = validate(source, skip_bad=True)  # the classes prepare_data finds: the CSV's folders
    apart = decode_source(Subset(source, report.good), 16, cache_dir=None)
    np.testing.assert_array_equal(data.train.data.images, apart.images)
    np.testing.assert_array_equal(data.train.labels, apart.labels)
    assert data.report["train"]["problems"] == [str(p) for p in report.problems]
    if cache is not None:
        assert data.train.data.path.parent == cache and not list(cache.glob("*partial*"))
        decoded.clear()
        again = prepare_data(cfg, 16, log=lambda m: None, progress=False)
        assert decoded == [] and again.train.data.path == data.train.data.path
        np.testing.assert_array_equal(again.train.data.read(np.arange(len(apart))), apart.images)


def test_csv_row_problems_are_reported_with_their_row(tmp_path):
    _save(tmp_path / "A" / "a.png", Image.new("RGB", (4, 4)))
    rows = ["A/a.png,0", "A/a.png", "A/a.png,one", ",0", "", "A/a.png,2.0"]  # lines 2-7; line 6 blank
    csv_path = _write_csv(tmp_path / "rows.csv", rows)
    source = CsvSource(csv_path)
    assert len(source) == 5 and source.row_numbers == [2, 3, 4, 5, 7]
    np.testing.assert_array_equal(source.labels, [0, -1, -1, -1, -1])
    with pytest.raises(DataError, match=r"row 4: .*Label 'one' is not an integer"):
        source[2]
    report = validate(source, skip_bad=True)
    np.testing.assert_array_equal(report.good, [0])
    messages = [str(problem) for problem in report.problems]
    assert messages[0].startswith("row 3: the row has 1 values, fewer than the 2 columns")
    assert messages[1].startswith("row 4: the Label 'one' is not an integer")
    assert messages[2].startswith("row 5: the Id (image path) is empty")
    assert messages[3].startswith("row 7: the Label '2.0' is not an integer")


def test_csv_without_the_columns_is_refused(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("path,class\nA/a.png,0\n")
    with pytest.raises(DataError, match=r"lacks the column\(s\) \['Id', 'Label'\]"):
        CsvSource(path)
    with pytest.raises(DataError, match="no such CSV file"):
        CsvSource(tmp_path / "absent.csv")


def test_csv_class_names(tmp_path, study_csv):
    images = tmp_path / "Train"
    rows = ["./Train/Beta/cmyk.jpg,1", "./Train/Alpha/rgba.png,0", "./Train/Omega/IMG_4107.JPEG,3"]
    clean = _write_csv(tmp_path / "clean.csv", rows)
    assert CsvSource(clean).class_names == ["Alpha", "Beta", "class_2", "Omega"]
    assert CsvSource(clean).paths[0] == images / "Beta" / "cmyk.jpg"

    rows = ["./Train/Beta/cmyk.jpg,0", "./Train/Alpha/rgba.png,0", "./Train/Gamma/exif.jpg,1"]
    mixed = _write_csv(tmp_path / "mixed.csv", rows)  # label 0 in two folders
    assert CsvSource(mixed).class_names == ["class_0", "class_1"]
    rows = ["./Train/Alpha/gray.png,0", "./Train/Alpha/rgba.png,1"]
    shared = _write_csv(tmp_path / "shared.csv", rows)  # two labels, one folder
    assert CsvSource(shared).class_names == ["class_0", "class_1"]

    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(f"knife {i}" for i in range(192)) + "\n\n")
    source = CsvSource(study_csv, classes_file=classes)
    assert len(source.class_names) == 192 and source.class_names[3] == "knife 3"
    with pytest.raises(DataError) as caught:
        validate(source)  # the classes file gives 192 classes
    assert any("the label 192 is outside [0, 192)" in line for line in caught.value.details)


def test_csv_root_defaults_to_the_csv_folder_and_can_be_given(tmp_path):
    _save(tmp_path / "images" / "K" / "a.png", Image.new("RGB", (4, 4)))
    csv_path = _write_csv(tmp_path / "lists" / "train.csv", ["K/a.png,0"])
    assert CsvSource(csv_path).paths == [tmp_path / "lists" / "K" / "a.png"]
    source = CsvSource(csv_path, root=tmp_path / "images")
    assert validate(source).num_bad == 0 and source.class_names == ["K"]


# --- ImageFolderSource ----------------------------------------------------------------------------


def test_image_folder_labels_follow_sorted_class_names(tmp_path):
    for name in ("b_knife/2.JPG", "b_knife/1.png", "A_knife/x.jpeg", "c_knife/sub/y.TIFF"):
        _save(tmp_path / name, Image.new("RGB", (4, 4)), format="TIFF" if name.endswith("TIFF") else None)
    (tmp_path / "A_knife" / "notes.txt").write_text("not an image")
    (tmp_path / "stray.png").write_bytes(b"")  # files beside the class folders are not classes
    source = ImageFolderSource(tmp_path)
    assert source.class_names == ["A_knife", "b_knife", "c_knife"]  # sorted like torchvision
    assert [path.relative_to(tmp_path).as_posix() for path in source.paths] == [
        "A_knife/x.jpeg", "b_knife/1.png", "b_knife/2.JPG", "c_knife/sub/y.TIFF"
    ]
    np.testing.assert_array_equal(source.labels, [0, 1, 1, 2])
    assert source[3]["label"] == 2 and source[3]["image"].shape == (4, 4, 3)


def test_image_folder_refuses_a_class_without_images(tmp_path):
    _save(tmp_path / "knife" / "a.png", Image.new("RGB", (4, 4)))
    (tmp_path / "empty_knife").mkdir()
    with pytest.raises(DataError, match=r"empty_knife: a class folder without images"):
        ImageFolderSource(tmp_path)


def test_image_folder_leaves_hidden_files_and_folders_out(tmp_path):
    _save(tmp_path / "knife" / "a.png", Image.new("RGB", (4, 4)))
    _save(tmp_path / "knife" / ".hidden.png", Image.new("RGB", (4, 4)))
    _save(tmp_path / "knife" / ".thumbs" / "b.png", Image.new("RGB", (4, 4)))
    (tmp_path / ".ipynb_checkpoints").mkdir()
    source = ImageFolderSource(tmp_path)
    assert source.class_names == ["knife"] and [p.name for p in source.paths] == ["a.png"]


# --- stratified_split and Subset ------------------------------------------------------------------


def test_stratified_split_properties():
    labels = np.repeat(np.arange(6), [1, 2, 3, 10, 40, 7])
    np.random.default_rng(0).shuffle(labels)
    train, val = stratified_split(labels, val_fraction=0.2, seed=3)
    assert np.intersect1d(train, val).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(labels.size))
    val_counts = {c: int(np.sum(labels[val] == c)) for c in range(6)}
    # floor(n * 0.2 + 0.5), clamped to 1..n-1 for classes of two or more; a single item trains.
    assert val_counts == {0: 0, 1: 1, 2: 1, 3: 2, 4: 8, 5: 1}
    assert set(labels[train]) == set(range(6)) and set(labels[val]) == set(range(1, 6))

    again_train, again_val = stratified_split(labels, val_fraction=0.2, seed=3)
    np.testing.assert_array_equal(again_val, val)
    np.testing.assert_array_equal(again_train, train)
    assert not np.array_equal(stratified_split(labels, val_fraction=0.2, seed=4)[1], val)

    train, val = stratified_split(labels, val_fraction=0.0, seed=3)
    assert val.size == 0 and train.size == labels.size
    with pytest.raises(ValueError, match="val_fraction"):
        stratified_split(labels, val_fraction=1.0, seed=3)


def test_a_class_split_does_not_depend_on_other_classes():
    labels = np.repeat([0, 1], 20)
    _, val = stratified_split(labels, 0.25, seed=0)
    _, val_with_more = stratified_split(np.concatenate([labels, np.full(9, 2)]), 0.25, seed=0)
    np.testing.assert_array_equal(val, val_with_more[val_with_more < 40])


def test_subset_follows_its_indices(tmp_path):
    for name in ("a", "b"):
        _save(tmp_path / name / f"{name}.png", Image.new("RGB", (2, 2)))
    source = ImageFolderSource(tmp_path)
    subset = Subset(source, [1])
    assert len(subset) == 1 and subset.labels.tolist() == [1] and subset.paths == [source.paths[1]]
    assert subset.class_names == ["a", "b"] and subset[0]["label"] == 1
    assert not hasattr(subset, "row_numbers")
    with pytest.raises(IndexError, match="outside the source's 2 items"):
        Subset(source, [2])
