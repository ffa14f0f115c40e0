"""Data for knifejax: image decoding with the study's semantics, CSV and folder sources, validation
before training, the study's augmentations, and the offline 192-class synthetic knives set."""

from knifejax.data.decode import load_rgb
from knifejax.data.errors import DataError
from knifejax.data.sources import CsvSource, ImageFolderSource, Subset, stratified_split

from knifejax.data.synthetic import (
    FINISHES,
    FITTINGS,
    HANDLES,
    NUM_CLASSES,
    PROFILES,
    KnifeClass,
    SyntheticKnives,
    class_attributes,
    class_names,
    hard_pairs,
    knife_class,
    render_knife,
)
from knifejax.data.tfds_source import TfdsSource
from knifejax.data.transforms import Augment, augment
from knifejax.data.validate import Problem, ValidationReport, validate

__all__ = [
    "Augment",
    "CsvSource",
    "DataError",
    "ImageFolderSource",
    "Problem",
    "Subset",
    "TfdsSource",
    "ValidationReport",
    "augment",
    "load_rgb",
    "stratified_split",
    "validate",
    "FINISHES",
    "FITTINGS",
    "HANDLES",
    "NUM_CLASSES",
    "PROFILES",
    "KnifeClass",
    "SyntheticKnives",
    "class_attributes",
    "class_names",
    "hard_pairs",
    "knife_class",
    "render_knife",
]
