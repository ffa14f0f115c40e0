"""`fit`: one training run from a TrainConfig into a run directory, resumable at any point.

Exact resume: the run checkpoints the whole TrainState (but its recipe numbers, which come from the config)
with its data position (epoch, batch) at every epoch's end and, with `checkpoint_every`, every N steps. Since
every batch is a pure function of (seed, epoch, batch number) (`knifejax.data.pipeline`), a run killed at any
point and started again with the same command replays the same batches from its last checkpoint and ends with
the same parameters, bit for bit on CPU, whichever data placement feeds it.

Losses are read one step late, so the host never waits for the device; a non-finite loss stops the run
before anything computed from it is checkpointed.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx
from tqdm.auto import tqdm

from knifejax.data.device_batches import DeviceImages, device_train_batches
from knifejax.data.pipeline import train_batches, train_steps_per_epoch
from knifejax.data.split import Split
from knifejax.data.transforms import Augment
from knifejax.atomic_write import write_text_atomically
from knifejax.errors import ConfigError, UserError
from knifejax.metrics import evaluation_metrics, standard_errors
from knifejax.models.registry import get_pretrained_cfg
from knifejax.plots import plot_training_curves
from knifejax.predict import predict
from knifejax.train.checkpoint import Checkpoints
from knifejax.train.config import TrainConfig
from knifejax.train.data_setup import prepare_data
from knifejax.train.optim import Hyperparameters, current_learning_rate, decay_mask_timm, hyperparameters, make_optimizer
from knifejax.train.placement import choose_placement
from knifejax.train.run import RunDir, build_model, image_size, normalization
from knifejax.train.sharding import check_batch_size, data_mesh, replicate, shard_batch
from knifejax.train.steps import TrainState, init_state, make_eval_step, make_train_step
from knifejax.train.transfer import frozen_prefixes, trainable_mask


class NonFiniteLossError(UserError, RuntimeError):
    """The training loss became NaN or infinite; the run's last checkpoint predates it."""


def augment_config(cfg: TrainConfig, size: int) -> Augment | None:
    if not cfg.augment:
        return None
    return Augment(
        size=size,
        brightness=cfg.brightness,
        contrast=cfg.contrast,
        saturation=cfg.saturation,
        hue=cfg.hue,
        rotation=tuple(cfg.rotation),
        hflip=cfg.hflip,
        vflip=cfg.vflip,
    )


def _no_weight_decay(model: nnx.Module) -> frozenset[str]:
    """Parameter names the model exempts from weight decay, as timm's `model.no_weight_decay()`."""
    return frozenset(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else frozenset()


def recipe_numbers(cfg: TrainConfig, total_steps: int) -> Hyperparameters:
    """The numbers of `cfg`'s recipe as the train step's inputs: runs that differ only in them share its program."""
    return hyperparameters(
        cfg.lr, cfg.schedule, total_steps=total_steps, t_max=cfg.t_max, eta_min=cfg.eta_min,
        warmup_steps=cfg.warmup_steps, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
        label_smoothing=cfg.label_smoothing,
    )  # fmt: skip


def build_optimizer(cfg: TrainConfig, model: nnx.Module, total_steps: int):
    frozen = frozen_prefixes(model, cfg.freeze_stages)
    return make_optimizer(
        cfg.optimizer,
        cfg.lr,
        schedule=cfg.schedule,
        total_steps=total_steps,
        t_max=cfg.t_max,
        eta_min=cfg.eta_min,
        warmup_steps=cfg.warmup_steps,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        weight_decay=cfg.weight_decay,
        mask=None if cfg.decay_all else partial(decay_mask_timm, no_weight_decay=_no_weight_decay(model)),
        trainable=trainable_mask(frozen) if frozen else None,
    )


def model_summary(model: nnx.Module, cfg: TrainConfig, size: int) -> dict:
    """What a run trains: parameter counts (all, and those not frozen by `freeze_stages`) and the input size."""
    frozen = frozen_prefixes(model, cfg.freeze_stages)
    is_trainable = trainable_mask(frozen)
    params = nnx.state(model, nnx.Param)
    sizes = jax.tree.leaves(jax.tree.map(lambda a: a.size, params))
    trainable = jax.tree.leaves(jax.tree.map(lambda a, t: a.size if t else 0, params, is_trainable(params)))
    return {
        "architecture": cfg.model,
        "parameters": int(sum(sizes)),
        "trainable_parameters": int(sum(trainable)),
        "frozen": list(frozen),
        "input_size": size,
    }


@jax.jit
def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


class _EpochSums:
    """Running sums of one epoch's training metrics; saved in checkpoints so a resumed epoch logs the same."""

    def __init__(self, saved: dict | None = None):
        saved = saved or {}
        self.loss = saved.get("loss", 0.0)
        self.map5 = saved.get("map5", 0.0)
        self.steps = saved.get("steps", 0)
        self.seconds = saved.get("seconds", 0.0)

    def add(self, metrics: dict) -> float:
        loss = float(metrics["loss"])
        self.loss += loss
        self.map5 += float(metrics["map@5"])
        self.steps += 1
        return loss

    def to_json(self) -> dict:
        return {"loss": self.loss, "map5": self.map5, "steps": self.steps, "seconds": self.seconds}


class DivergenceWatch:
    """Warns once when the training loss grows to `factor` times its first value: a run that diverges without
    ever reaching NaN (a learning rate of 1e3 took the loss to 1e17) should not train on in silence."""

    def __init__(self, lr: float, log: Callable[[str], None], factor: float = 100.0) -> None:
        self.lr, self.log, self.factor = lr, log, factor
        self.first: float | None = None
        self.warned = False

    def see(self, loss: float, step: int) -> None:
        if self.first is None:
            self.first = loss
        elif not self.warned and loss > self.factor * max(self.first, 1e-3):
            self.warned = True
            self.log(
                f"warning: the training loss grew from {self.first:.4g} to {loss:.4g} by step {step}, over "
                f"{self.factor:g} times its first value: the run is diverging; lower the learning rate (--lr, now "
                f"{self.lr:g})"
            )


def checkpoint_trees(state: TrainState) -> dict[str, dict]:
    """What a checkpoint of the run holds: "model" (what `load_run` reads) and "optimizer", named by field. In
    jax's leaf order (sorted keys) each is the tuple the earlier flat-list checkpoints saved, which keeps those
    readable."""
    return {
        "model": {"params": state.params, "rest": state.rest},
        "optimizer": {"opt_state": state.opt_state, "step": state.step},
    }


def fit(cfg: TrainConfig, run_dir: str | Path, *, progress: bool = True, log: Callable[[str], None] = print) -> list[dict]:
    """Train (or resume) the run `cfg` describes in `run_dir`; returns the per-epoch metrics lines.

    The run directory is held for this trainer (`RunDir.lock`) from the moment its data and arguments were found
    usable until it returns or fails: a second trainer on the same directory stops with `RunInUseError`.
    """
    with contextlib.ExitStack() as held:
        return _fit(cfg, RunDir(run_dir), held, progress=progress, log=log)


def _on_mesh(batches: Iterator[dict], mesh) -> Iterator[tuple[jax.Array, jax.Array]]:
    """Host batches as global (images, labels) arrays split over `mesh`; closing it stops the loader's workers."""
    try:
        for batch in batches:
            yield shard_batch((batch["images"], batch["labels"]), mesh)
    finally:
        batches.close()


def _fit(cfg: TrainConfig, run: RunDir, held: contextlib.ExitStack, *, progress: bool, log: Callable[[str], None]) -> list[dict]:
    is_main = jax.process_index() == 0
    run.check_config(cfg)
    mesh = data_mesh()
    check_batch_size(cfg.batch_size, mesh)
    size = image_size(cfg, get_pretrained_cfg(cfg.model))
    data = prepare_data(cfg, size, log, progress=progress)
    num_classes = cfg.num_classes or len(data.class_names)
    steps_per_epoch = train_steps_per_epoch(len(data.train), cfg.batch_size)
    if steps_per_epoch == 0:
        raise ConfigError(
            f"--batch-size {cfg.batch_size} is more than the {len(data.train)} training images; lower --batch-size"
        )
    model = build_model(cfg, num_classes)  # before the run is written: a refused weights file leaves no run behind
    if is_main:
        held.enter_context(run.lock())
        run.start(cfg)
        run.write_classes(data.class_names)
        write_text_atomically(run.data_report, json.dumps(data.report, indent=1) + "\n")
        summary = model_summary(model, cfg, size)
        run.write_model_summary(summary)
        log(f"{cfg.model}: {summary['parameters']:,} parameters, {summary['trainable_parameters']:,} trainable")
    normalize = normalization(cfg.norm, model.pretrained_cfg)
    total_steps = cfg.epochs * steps_per_epoch
    optimizer = build_optimizer(cfg, model, total_steps)
    frozen_bn = frozen_prefixes(model, cfg.freeze_stages) if cfg.frozen_bn_eval else ()
    graphdef, state = init_state(model, optimizer, frozen_bn, recipe_numbers(cfg, total_steps))
    del model
    state = replicate(state, mesh)

    latest, best = Checkpoints(run.latest, max_to_keep=2), Checkpoints(run.best)
    held.callback(latest.close)  # on every way out: Orbax's threads must not outlive a failed run
    held.callback(best.close)
    progress_info = {"epoch": 0, "batch": 0, "sums": {}, "best_map5": -1.0, "best_epoch": -1}
    resumed = latest.latest_step() is not None
    if resumed:
        trees, progress_info = latest.restore(checkpoint_trees(state), fall_back=log)
        model_trees, optimizer_trees = trees["model"], trees["optimizer"]
        state = state._replace(params=model_trees["params"], rest=model_trees["rest"], opt_state=optimizer_trees["opt_state"],
                               step=optimizer_trees["step"])  # fmt: skip
        latest.discard_after(int(state.step))  # damaged steps, skipped above: this run writes them again
        log(f"resuming {run.path} at epoch {progress_info['epoch'] + 1}, batch {progress_info['batch']}")
    if is_main:
        run.keep_epochs_before(progress_info["epoch"])

    train_step = make_train_step(graphdef, optimizer, normalize=normalize, precision=cfg.precision)
    eval_step = make_eval_step(graphdef, normalize=normalize, precision=cfg.precision)
    augment = augment_config(cfg, size)
    history = run.history()
    divergence = DivergenceWatch(cfg.lr, log)

    def last_good() -> str:
        """The checkpoint to fall back on; a NaN after a resume is the training diverging, not damaged files,
        since what the run resumed from was verified when it was read (`Checkpoints.restore`)."""
        step = latest.latest_step()
        if step is None:
            return "no checkpoint was saved"
        verified = " (the checkpoint it resumed from was verified when read: the training diverged)" if resumed else ""
        return f"its last good checkpoint is step {step} in {run.latest}{verified}"

    def save_latest(epoch: int, batch: int, sums: _EpochSums) -> None:
        if not _all_finite(state.params):
            raise NonFiniteLossError(
                f"the parameters became NaN or infinite by step {int(state.step)} (epoch {epoch + 1}); the run stopped "
                f"before saving them, and {last_good()}; lower the learning rate (--lr, now {cfg.lr}) or use warmup "
                "(--warmup-steps) in a new --run directory"
            )
        info = dict(progress_info, epoch=epoch, batch=batch, sums=sums.to_json())
        latest.save(int(state.step), checkpoint_trees(state), info)

    placement = choose_placement(
        cfg.data_placement, augment, [split.data for split in (data.train, data.val, data.test) if split is not None],
        jax.local_devices(), log,
    )
    placed = {}  # DecodedImages id -> its DeviceImages: a validation split carved from the training set shares it

    def on_device(split: Split | None) -> DeviceImages | None:
        if placement != "device" or split is None:
            return None
        if id(split.data) not in placed:
            placed[id(split.data)] = DeviceImages.place(split.data, mesh)
        return placed[id(split.data)]

    feed = dict(augment_cfg=augment, seed=cfg.seed, epoch=progress_info["epoch"], start_batch=progress_info["batch"],
                end_epoch=cfg.epochs, process_index=jax.process_index(), process_count=jax.process_count())
    val_placed = on_device(data.val)  # placed before the first epoch, so that its timings do not hold the copy
    if placement == "device":
        stream = device_train_batches(on_device(data.train), data.train.indices, cfg.batch_size, **feed)
    else:
        stream = _on_mesh(train_batches(data.train.data, data.train.indices, cfg.batch_size, workers=cfg.workers,
                                        **feed), mesh)  # fmt: skip
    for epoch in range(progress_info["epoch"], cfg.epochs):
        start_batch = progress_info["batch"] if epoch == progress_info["epoch"] else 0
        sums = _EpochSums(progress_info["sums"] if epoch == progress_info["epoch"] else None)
        batches = itertools.islice(stream, steps_per_epoch - start_batch)
        bar = tqdm(total=steps_per_epoch, initial=start_batch, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step",
                   disable=not (progress and is_main), dynamic_ncols=True)
        pending: tuple[int, dict] | None = None

        def consume() -> None:
            nonlocal pending
            if pending is None:
                return
            batch_number, metrics = pending
            pending = None
            loss = sums.add(metrics)
            if not math.isfinite(loss):
                raise NonFiniteLossError(
                    f"the training loss became {loss} at epoch {epoch + 1}, batch {batch_number + 1}; the run stopped "
                    f"and {last_good()}; lower the learning rate (--lr, now {cfg.lr}) or use warmup (--warmup-steps) "
                    "in a new --run directory"
                )
            divergence.see(loss, int(state.step))
            elapsed = sums.seconds + time.perf_counter() - started
            bar.set_postfix(
                loss=f"{sums.loss / sums.steps:.4f}",
                map5=f"{sums.map5 / sums.steps:.3f}",
                img_s=f"{sums.steps * cfg.batch_size / elapsed:.1f}",
            )

        started = time.perf_counter()
        for batch_number, (images, labels) in enumerate(batches, start=start_batch):
            state, metrics = train_step(state, images, labels)
            consume()
            pending = (batch_number, metrics)
            bar.update(1)
            if cfg.checkpoint_every and (batch_number + 1) % cfg.checkpoint_every == 0 and batch_number + 1 < steps_per_epoch:
                consume()
                sums.seconds += time.perf_counter() - started
                started = time.perf_counter()
                save_latest(epoch, batch_number + 1, sums)
        consume()
        bar.close()
        sums.seconds += time.perf_counter() - started

        eval_started = time.perf_counter()
        val_logits = predict(partial(eval_step, state), data.val, cfg.batch_size, mesh, val_placed)
        val = evaluation_metrics(val_logits, data.val.labels)
        line = {
            "epoch": epoch,
            "step": int(state.step),
            "lr": float(current_learning_rate(state.opt_state)),
            "train_loss": sums.loss / sums.steps,
            "train_map@5": sums.map5 / sums.steps,
            **{f"val_{k}": v for k, v in val.items()},
            "train_seconds": sums.seconds,
            "eval_seconds": time.perf_counter() - eval_started,
            "images_per_s": sums.steps * cfg.batch_size / sums.seconds,
        }
        history.append(line)
        if is_main:
            run.append_metrics(line)
            plot_training_curves(history, run.curves, title=f"{cfg.model} — {run.path.name}")
        log(
            f"epoch {epoch + 1}/{cfg.epochs}: train loss {line['train_loss']:.4f}, val loss {val['loss']:.4f}, "
            f"val MAP@5 {val['map@5']:.4f}, MAP@1 {val['map@1']:.4f}, acc@5 {val['acc@5']:.4f}"
        )
        if val["map@5"] > progress_info["best_map5"]:
            progress_info.update(best_map5=val["map@5"], best_epoch=epoch)
            best.save(epoch, {"model": checkpoint_trees(state)["model"]}, dict(progress_info, epoch=epoch + 1))
        save_latest(epoch + 1, 0, _EpochSums())

    stream.close()  # stops the worker processes now rather than at garbage collection
    if data.test is not None:
        test_logits = predict(partial(eval_step, state), data.test, cfg.batch_size, mesh, on_device(data.test))
        test = evaluation_metrics(test_logits, data.test.labels) | standard_errors(test_logits, data.test.labels)
        if is_main:
            write_text_atomically(run.test_metrics, json.dumps({"model": "final", **test}, indent=1) + "\n")
        log(f"test: MAP@5 {test['map@5']:.4f}, MAP@1 {test['map@1']:.4f}, acc@5 {test['acc@5']:.4f}")
    return history
