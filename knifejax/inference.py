"""A trained model ready to score images: from a run directory or from a timm-named checkpoint file."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
from flax import nnx

from knifejax.data.cache import DecodedImages, resize_square
from knifejax.data.decode import DEFAULT_MAX_PIXELS, load_rgb
from knifejax.data.errors import DataError
from knifejax.data.sources import IMAGE_EXTENSIONS, ImageFolderSource
from knifejax.data.split import Split
from knifejax.data.validate import problems_error
from knifejax.io.errors import CheckpointError
from knifejax.io.readers import open_state_dict
from knifejax.metrics import evaluation_metrics
from knifejax.models.registry import create_model, get_pretrained_cfg
from knifejax.predict import predict
from knifejax.train.run import image_size, load_run, normalization
from knifejax.train.steps import TrainState, make_eval_step
from knifejax.weights import load_timm_weights


class Predictor:
    """Scores uint8 images resized to `size` with `model` in eval mode."""

    def __init__(self, model: nnx.Module, class_names: list[str], size: int, mean, std, batch_size: int = 32):
        model.eval()
        self.model = model
        self.mean, self.std = mean, std
        self.graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        self.state = TrainState(params, rest, None, None)
        self.class_names = list(class_names)
        self.size = size
        self.batch_size = batch_size
        self.eval_step = make_eval_step(self.graphdef, normalize=(mean, std))

    @classmethod
    def from_run(cls, run_dir: str | Path, which: str = "best", batch_size: int = 32) -> Predictor:
        model, cfg, names = load_run(run_dir, which)
        mean, std = normalization(cfg.norm, model.pretrained_cfg)
        return cls(model, names, image_size(cfg, model.pretrained_cfg), mean, std, batch_size)

    @classmethod
    def from_weights(
        cls,
        model_name: str,
        weights: str | Path,
        class_names: list[str] | None = None,
        size: int | None = None,
        norm: str = "model",
        batch_size: int = 32,
    ) -> Predictor:
        """A model made elsewhere: its class count is read from the checkpoint's classifier."""
        classifier = f"{get_pretrained_cfg(model_name)['classifier']}.weight"
        with open_state_dict(weights) as checkpoint:
            if classifier not in checkpoint.entries:
                raise CheckpointError(f"{weights}: no classifier weight {classifier!r}, so the class count is unknown")
            # Read, not just its shape taken: the class count builds the model, so it must be a tensor the file holds.
            weight = checkpoint.read([classifier])[classifier]
        if weight.ndim != 2 or weight.shape[0] < 1:
            raise CheckpointError(f"{weights}: the classifier weight {classifier!r} has shape {weight.shape}, not "
                                  "(classes, features)")
        num_classes = weight.shape[0]
        model = load_timm_weights(create_model(model_name, num_classes=num_classes), weights)
        if class_names is None:
            class_names = [f"class_{i}" for i in range(num_classes)]
        if len(class_names) != num_classes:
            raise DataError(f"{len(class_names)} class names for a classifier of {num_classes} classes in {weights}")
        mean, std = normalization(norm, model.pretrained_cfg)
        return cls(model, class_names, size or int(model.pretrained_cfg["input_size"][-1]), mean, std, batch_size)

    def logits(self, data: DecodedImages) -> np.ndarray:
        """float32 logits (N, classes) of every image of `data`, in order."""
        return predict(partial(self.eval_step, self.state), Split.whole(data), self.batch_size)

    def evaluate(self, data: DecodedImages) -> dict[str, float]:
        """Loss, MAP@1, MAP@5 and acc@5 over every image of `data`."""
        return evaluation_metrics(self.logits(data), data.labels)

    def load_images(self, paths: list[Path], max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImages:
        """Decode and resize image files; one DataError lists every file that cannot be read."""
        images, problems = [], []
        for path in paths:
            try:
                images.append(resize_square(load_rgb(path, max_pixels), self.size))
            except DataError as error:
                problems.append(str(error))
        if problems:
            raise problems_error("the images given", problems, len(paths), advice="replace or leave out those files")
        array = np.stack(images) if images else np.zeros((0, self.size, self.size, 3), np.uint8)
        return DecodedImages(np.full(len(paths), -1), self.class_names, self.size, None, array)

    def top_k(self, data: DecodedImages, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """(indices, probabilities) of the k most probable classes per image, best first."""
        logits = self.logits(data)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs = shifted / shifted.sum(axis=1, keepdims=True)
        top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        return top, np.take_along_axis(probs, top, axis=1)


def align_folder_labels(source: ImageFolderSource, class_names: list[str]) -> ImageFolderSource:
    """Relabel an image folder by the model's class names: a folder's labels come from its sorted sub-folder
    names, which need not be the order (or the whole set) of classes the model was trained with."""
    index = {name: i for i, name in enumerate(class_names)}
    unknown = [name for name in source.class_names if name not in index]
    if unknown:
        raise DataError(
            f"{source.root}: class folders {unknown[:10]} are not classes of the model "
            f"(it knows {len(class_names)}, e.g. {class_names[:3]}); rename or remove them"
        )
    source.labels = np.asarray([index[name] for name in source.class_names], np.int64)[source.labels]
    source.class_names = list(class_names)
    return source


def image_files(inputs: list[str | Path]) -> list[Path]:
    """Image files named directly or found (recursively, sorted) in the folders named."""
    files = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        elif item.is_file():
            files.append(item)
        else:
            raise DataError(f"{item}: no such file or folder")
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {', '.join(map(str, inputs))}")
    return files
