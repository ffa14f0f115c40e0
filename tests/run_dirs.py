"""Run directories for tests that need a trained-looking run without paying for training."""

import warnings

import jax
import orbax.checkpoint as ocp
from flax import nnx

from knifejax.data import SyntheticKnives
from knifejax.train.checkpoint import Checkpoints
from knifejax.train.config import TrainConfig
from knifejax.train.run import RunDir, build_model


def write_untrained_run(path, model_name, size, norm, seed, pretrained, classes, per_class=16, flat_lists=False):
    """A run directory on `classes` synthetic classes whose best checkpoint is the model as initialised; with
    `flat_lists`, written in the layout of runs made before checkpoints named their arrays."""
    cfg = TrainConfig(
        model=model_name, pretrained="default" if pretrained else None, image_size=size, norm=norm, seed=seed,
        synthetic_classes=classes, synthetic_per_class=per_class, val_fraction=0.5,
        cache_dir=str(path.parent / "cache"),
    )  # fmt: skip
    run = RunDir(path)
    run.start(cfg)
    run.write_classes(SyntheticKnives(classes).class_names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an ImageNet head is dropped for fewer classes
        model = build_model(cfg, classes)
    _, params, rest = nnx.split(model, nnx.Param, ...)
    if flat_lists:
        save_as_flat_lists(run.best, 1, {"model": (params, rest)}, {"epoch": 1})
        return path
    checkpoints = Checkpoints(run.best)
    checkpoints.save(1, {"model": {"params": params, "rest": rest}}, {"epoch": 1})
    checkpoints.close()
    return path


def save_as_flat_lists(folder, step, trees, progress):
    """A checkpoint as knifejax wrote them before trees were named: each tree the flat list of its leaves (typed
    PRNG keys as their key data) beside a JSON progress item, without checksums."""
    def saveable(tree):
        is_key = lambda x: jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)  # noqa: E731
        return [jax.random.key_data(x) if is_key(x) else x for x in jax.tree.leaves(tree)]

    items = {name: ocp.args.StandardSave(saveable(tree)) for name, tree in trees.items()}
    options = ocp.CheckpointManagerOptions(max_to_keep=1, enable_async_checkpointing=False, create=True)
    with ocp.CheckpointManager(folder.absolute(), options=options) as manager:
        manager.save(step, args=ocp.args.Composite(progress=ocp.args.JsonSave(progress), **items))
        manager.wait_until_finished()
