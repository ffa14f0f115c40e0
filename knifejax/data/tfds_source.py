"""A prepared tensorflow-datasets split as a random-access source, read without TensorFlow.

The split must have been prepared as ``array_record`` (random access); records are tf.Example
protos from which only the image and the label are read, so other features (masks, boxes, ids)
cost nothing.  ``tensorflow_datasets`` is imported when a ``TfdsSource`` is made, not before.

Pixels are those tfds itself decodes (it uses OpenCV when installed, else Pillow; neither applies
EXIF orientation, as TensorFlow does not).  One channel is replicated to three, as ``load_rgb``
does; a second (gray + alpha) or fourth (RGBA) channel, alpha, is dropped.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np

from knifejax.data.errors import DataError

# Records whose labels are read at a time: array_record reads a batch in parallel threads.
_LABEL_BATCH = 512
_PREPARE_HINT = "tfds.builder({name!r}, data_dir={data_dir!r}, file_format='array_record').download_and_prepare()"


class TfdsSource:
    """Split ``split`` of the tfds dataset ``name`` (``'name[/config][:version]'``) in ``data_dir``.

    ``split`` takes tfds's slicing, e.g. ``'train[:80%]'``.  ``data_dir`` defaults to tfds's own
    (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).  Nothing is downloaded or prepared here: a
    source must not start a download of many gigabytes; the error says how to prepare the data.
    ``image_key`` must name an 8-bit ``Image`` feature and ``label_key`` a ``ClassLabel``, whose
    names are ``class_names``.  ``labels`` is read on first use, by one pass over the split's
    records that parses each label and decodes no image.
    """

    def __init__(
        self,
        name: str,
        split: str = "train",
        data_dir: str | os.PathLike[str] | None = None,
        image_key: str = "image",
        label_key: str = "label",
    ) -> None:
        tfds = _import_tfds()
        data_dir = os.fspath(data_dir) if data_dir is not None else None
        self.name = name
        self.split = split
        self.image_key = image_key
        self.label_key = label_key
        builder = _prepared_builder(tfds, name, data_dir)
        features = builder.info.features
        self._image_feature = _feature(features, image_key, "image_key", tfds.features.Image, name)
        if self._image_feature.np_dtype != np.uint8:
            raise DataError(
                f"tfds dataset {name!r}: the image feature {image_key!r} holds {self._image_feature.np_dtype} "
                "pixels; TfdsSource reads 8-bit images only"
            )
        label_feature = _feature(features, label_key, "label_key", tfds.features.ClassLabel, name)
        self.class_names = list(label_feature.names)
        self._records = _open_split(tfds, builder, name, split, data_dir)

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is outside the source's {len(self)} items")
        index %= len(self)
        where = self._where(index)
        example = self._parse(self._records[index], index)
        encoded = _only_value(example, self.image_key, "bytes_list", where)
        try:
            image = self._image_feature.decode_example_np(encoded)
        except Exception as error:  # whatever OpenCV or Pillow raise for bytes that are no image
            raise DataError(f"{where}: cannot decode the image ({error}); prepare the data again") from error
        return {"image": _to_rgb(image, where), "label": self._label(example, index)}

    @functools.cached_property
    def labels(self) -> np.ndarray:
        labels = np.empty(len(self), dtype=np.int64)
        for start in range(0, len(self), _LABEL_BATCH):
            indices = list(range(start, min(start + _LABEL_BATCH, len(self))))
            for index, record in zip(indices, self._records.__getitems__(indices)):
                labels[index] = self._label(self._parse(record, index), index)
        return labels

    def _parse(self, record: bytes, index: int) -> Any:
        from tensorflow_datasets.proto import tf_example_pb2

        try:
            return tf_example_pb2.Example.FromString(record)
        except Exception as error:  # protobuf's DecodeError
            raise DataError(f"{self._where(index)}: the record is not a tf.Example ({error})") from error

    def _label(self, example: Any, index: int) -> int:
        """The stored label, as is: tfds stores -1 for unlabelled items, which ``validate`` reports."""
        return int(_only_value(example, self.label_key, "int64_list", self._where(index)))

    def _where(self, index: int) -> str:
        return f"tfds dataset {self.name!r}, split {self.split!r}, item {index}"


def _import_tfds() -> Any:
    try:
        import tensorflow_datasets
    except ImportError as error:
        raise DataError(
            f"TfdsSource needs tensorflow-datasets, which cannot be imported ({error}); "
            "pip install 'knifejax[tfds]' (it does not need TensorFlow)"
        ) from error
    return tensorflow_datasets


def _prepared_builder(tfds: Any, name: str, data_dir: str | None) -> Any:
    in_dir = f"in {data_dir}" if data_dir else "in tfds's default data_dir ($TFDS_DATA_DIR or ~/tensorflow_datasets)"
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError:
        raise DataError(
            f"tfds knows no dataset {name!r}: it is not in tfds's catalog (tfds.list_builders()) and is not "
            f"prepared {in_dir}; check the name and data_dir"
        ) from None
    except (ValueError, AssertionError) as error:  # an unknown config or version
        raise DataError(f"cannot open tfds dataset {name!r} {in_dir}: {error}") from error
    if not builder.is_prepared():
        raise DataError(
            f"tfds dataset {name!r} is not prepared in {builder.data_dir}; prepare it once with "
            + _PREPARE_HINT.format(name=name, data_dir=data_dir)
        )
    return builder


def _feature(features: Any, key: str, argument: str, kind: type, name: str) -> Any:
    """The top-level feature ``key``, which must be a ``kind``; the error lists the features there are."""
    available = ", ".join(f"{other} ({type(feature).__name__})" for other, feature in features.items())
    if key not in features.keys():
        raise DataError(
            f"tfds dataset {name!r} has no feature {key!r}; its features are {available}; "
            f"pass the right one as {argument}"
        )
    feature = features[key]
    if not isinstance(feature, kind):
        raise DataError(
            f"tfds dataset {name!r}: the feature {key!r} is of type {type(feature).__name__}, not {kind.__name__}; "
            f"its features are {available}; pass one of type {kind.__name__} as {argument}"
        )
    return feature


def _open_split(tfds: Any, builder: Any, name: str, split: str, data_dir: str | None) -> Any:
    """The split's records as undecoded tf.Example bytes, in the dataset's order."""
    try:
        return builder.as_data_source(split=split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
    except NotImplementedError:
        raise DataError(
            f"tfds dataset {name!r} is prepared in {builder.data_dir} as {builder.info.file_format.value}, "
            f"which cannot be read by index; delete {builder.data_dir} (or pick another data_dir) and prepare "
            "it as array_record with " + _PREPARE_HINT.format(name=name, data_dir=data_dir)
        ) from None
    except ValueError as error:  # an unknown split or a malformed slice
        raise DataError(
            f"tfds dataset {name!r}: cannot read the split {split!r} ({error}); its splits are "
            f"{sorted(builder.info.splits.keys())}, which can be sliced, e.g. 'train[:80%]'"
        ) from error


def _only_value(example: Any, key: str, kind: str, where: str) -> Any:
    """The single value of feature ``key`` of a tf.Example, which tfds stores as a ``kind``."""
    values = getattr(example.features.feature[key], kind).value
    if len(values) != 1:
        raise DataError(f"{where}: the record holds {len(values)} values for {key!r}, not one; prepare the data again")
    return values[0]


def _to_rgb(image: np.ndarray, where: str) -> np.ndarray:
    """A writable uint8 (H, W, 3) array: gray replicated, alpha dropped."""
    if image.ndim == 2:
        image = image[..., None]
    channels = image.shape[-1]
    if image.ndim != 3 or channels not in (1, 2, 3, 4):
        raise DataError(f"{where}: the image has shape {image.shape}, not (height, width, 1 to 4 channels)")
    if channels <= 2:
        return np.repeat(image[..., :1], 3, axis=-1)
    return np.require(image[..., :3], requirements=("C", "W"))
