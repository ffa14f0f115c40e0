"""`fit`: one training run from a TrainConfig into a run directory, resumable at any point.

Exact resume: the run checkpoints the whole TrainState (but its recipe numbers, which come from the config)
with its data position (epoch, batch) at every epoch's end and, with `checkpoint_every`, every N steps. Since
every batch is a pure function of (seed, epoch, batch number) (`knifejax.data.pipeline`), a run killed at any
point and started again with the same command replays the same batches from its last checkpoint and ends with
the same parameters, bit for bit on CPU, whichever data placement feeds it.

A run bounded by `max_steps` is the first `max_steps` steps of the run it bounds (same batches, same learning
rates: the schedule still spans `epochs`). The epoch the bound cuts short is evaluated, logged and checkpointed
at its position within the epoch, so the same command started again after the end trains nothing more.

Losses are read one step late, so the host never waits for the device; a non-finite loss stops the run
before anything computed from it is checkpointed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import time
import warnings
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from knifejax.data.device_batches import DeviceImages, device_train_batches
from knifejax.data.pipeline import train_batches, train_steps_per_epoch
from knifejax.data.split import Split
from knifejax.data.transforms import Augment
from knifejax.atomic_write import write_text_atomically
from knifejax.errors import ConfigError, UserError
from knifejax.io.errors import CheckpointError
from knifejax.memory import Budget, memory_budget
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
from knifejax.train.sharding import DATA_AXIS, check_batch_size, data_mesh, replicate, shard_batch
from knifejax.train.steps import TrainState, init_state, make_eval_step, make_members_train_step, make_train_step
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


class DivergenceWarning(UserWarning):
    """The training loss grew far above its first value: the run is diverging without having reached NaN."""


class DivergenceWatch:
    """Warns once (a `DivergenceWarning`) when the training loss grows to `factor` times its first value: a run
    that diverges without ever reaching NaN (a learning rate of 1e3 took the loss to 1e17) should not train on in
    silence. `where` names the run in the message when several train side by side."""

    def __init__(self, lr: float, where: str = "", factor: float = 100.0) -> None:
        self.lr, self.where, self.factor = lr, where, factor
        self.first: float | None = None
        self.warned = False

    def see(self, loss: float, step: int) -> None:
        if self.first is None:
            self.first = loss
        elif not self.warned and loss > self.factor * max(self.first, 1e-3):
            self.warned = True
            warnings.warn(
                f"{self.where}the training loss grew from {self.first:.4g} to {loss:.4g} by step {step}, over "
                f"{self.factor:g} times its first value: the run is diverging; lower the learning rate (--lr, now "
                f"{self.lr:g})",
                DivergenceWarning,
                stacklevel=2,
            )


def checkpoint_trees(state: TrainState) -> dict[str, dict]:
    """What a checkpoint of the run holds: "model" (what `load_run` reads) and "optimizer", named by field. In
    jax's leaf order (sorted keys) each is the tuple the earlier flat-list checkpoints saved, which keeps those
    readable."""
    return {
        "model": {"params": state.params, "rest": state.rest},
        "optimizer": {"opt_state": state.opt_state, "step": state.step},
    }


# The fields in which the members of one side-by-side group may differ: the numbers of their recipes
# (`recipe_numbers`), inputs of the one compiled step. Whether a momentum buffer or a weight-decay term exists is
# part of the program: the group's optimizer has them when any member needs them, and members without add zeros.
MEMBER_FIELDS = ("lr", "schedule", "t_max", "eta_min", "warmup_steps", "momentum", "weight_decay", "label_smoothing")


def group_key(cfg: TrainConfig) -> TrainConfig:
    """What fixes a run's program and data: `cfg` with its member fields at their defaults."""
    defaults = TrainConfig()
    return dataclasses.replace(cfg, **{name: getattr(defaults, name) for name in MEMBER_FIELDS})


def side_by_side_groups(configs: list[TrainConfig]) -> list[list[int]]:
    """The indices of `configs` in groups that can train side by side (`fit_many`): equal but for
    `MEMBER_FIELDS`; groups in the order of their first member, members in their given order."""
    groups: dict[TrainConfig, list[int]] = {}
    for index, cfg in enumerate(configs):
        groups.setdefault(group_key(cfg), []).append(index)
    return list(groups.values())


def fit(cfg: TrainConfig, run_dir: str | Path, *, progress: bool = True, log: Callable[[str], None] = print) -> list[dict]:
    """Train (or resume) the run `cfg` describes in `run_dir`; returns the per-epoch metrics lines.

    The run directory is held for this trainer (`RunDir.lock`) from the moment its data and arguments were found
    usable until it returns or fails: a second trainer on the same directory stops with `RunInUseError`.
    """
    return fit_many([cfg], [run_dir], progress=progress, log=log)[0]


def fit_many(
    configs: list[TrainConfig], run_dirs: list[str | Path], *, progress: bool = True,
    log: Callable[[str], None] = print,
) -> list[list[dict]]:  # fmt: skip
    """Train (or resume) runs that differ only in their recipe's numbers (`MEMBER_FIELDS`: rate, schedule,
    momentum, weight decay, label smoothing) side by side: one model initialisation, one data order, and one
    compiled step that updates every member's state, stacked on a leading axis, under `jax.vmap`. Returns each
    run's metrics lines.

    Each member writes an ordinary run directory, as `fit` would, and all are held for this trainer. Members
    checkpoint together, so a group killed at any point resumes from the newest step they all saved. A member whose
    loss becomes non-finite stops there (its last good checkpoint kept, its state no longer updated) while the
    others train on; `NonFiniteLossError` then names it once the others have finished. Members equal a run trained
    alone up to float rounding (a vmapped convolution adds in another order).
    """
    if not configs or len(configs) != len(run_dirs):
        raise ValueError(f"fit_many needs one run directory per configuration, got {len(configs)} and {len(run_dirs)}")
    paths = [Path(path).absolute() for path in run_dirs]
    if len(set(paths)) != len(paths):
        raise ConfigError("fit_many was given the same run directory twice; give each configuration its own")
    for index, cfg in enumerate(configs[1:], start=1):
        changed = group_key(configs[0]).differences(group_key(cfg))
        if changed:
            raise ConfigError(
                f"configuration {index} cannot train side by side with configuration 0 ({'; '.join(changed)}): "
                f"members may differ only in {', '.join(MEMBER_FIELDS)}; split them with side_by_side_groups"
            )
    runs = [RunDir(path) for path in run_dirs]
    histories: list[list[dict]] = []
    failures: list[str] = []
    at_once = len(configs)
    while len(histories) < len(configs):
        members = slice(len(histories), len(histories) + at_once)
        try:
            with contextlib.ExitStack() as held:
                done, failed = _fit(configs[members], runs[members], held, progress=progress, log=log,
                                    in_group=len(configs) > 1)  # fmt: skip
        except _TooManyMembers as too_many:
            at_once = too_many.at_once
            log(f"{len(configs[members])} runs side by side need {too_many.budget.describe()}: training them "
                f"{at_once} at a time")  # fmt: skip
            continue
        histories += done
        failures += failed
    if failures:
        others = "the others finished" if len(failures) < len(configs) else "no run finished"
        raise NonFiniteLossError(
            f"{len(failures)} of {len(configs)} runs trained side by side stopped ({others}); the first, {failures[0]}"
        )
    return histories


def _on_mesh(batches: Iterator[dict], mesh) -> Iterator[tuple[jax.Array, jax.Array]]:
    """Host batches as global (images, labels) arrays split over `mesh`; closing it stops the loader's workers."""
    try:
        for batch in batches:
            yield shard_batch((batch["images"], batch["labels"]), mesh)
    finally:
        batches.close()


class _Member:
    """One run of a group: its directory, checkpoints, progress and epoch sums, and its own messages."""

    def __init__(self, cfg: TrainConfig, run: RunDir, total_steps: int, log: Callable[[str], None], named: bool):
        self.cfg, self.run = cfg, run
        self.log = (lambda message: log(f"{run.path}: {message}")) if named else log
        self.hyper = recipe_numbers(cfg, total_steps)
        self.latest = self.best = None  # opened once the run's model is built: a failed start creates no folder
        self.progress = {"epoch": 0, "batch": 0, "sums": {}, "best_map5": -1.0, "best_epoch": -1}
        self.divergence = DivergenceWatch(cfg.lr, f"{run.path}: " if named else "")
        self.resumed = False
        self.stopped: str | None = None  # why the member stopped training
        self.sums = _EpochSums()
        self.history: list[dict] = []
        self.curves_drawn_at = time.perf_counter()  # when curves.png was last drawn (or the member began)
        self.curves_lines = 0  # how many of `history`'s lines curves.png shows

    def open_checkpoints(self) -> None:
        self.latest, self.best = Checkpoints(self.run.latest, max_to_keep=2), Checkpoints(self.run.best)

    def close(self) -> None:
        for checkpoints in (self.latest, self.best):
            if checkpoints is not None:
                checkpoints.close()

    def last_good(self) -> str:
        """The checkpoint to fall back on; a NaN after a resume is the training diverging, not damaged files,
        since what the run resumed from was verified when it was read (`Checkpoints.restore`)."""
        step = self.latest.latest_step()
        if step is None:
            return "no checkpoint was saved"
        verified = " (the checkpoint it resumed from was verified when read: the training diverged)" if self.resumed else ""
        return f"its last good checkpoint is step {step} in {self.run.latest}{verified}"

    def advice(self) -> str:
        return (f"lower the learning rate (--lr, now {self.cfg.lr}) or use warmup (--warmup-steps) in a new --run "
                "directory")  # fmt: skip


def _restore_together(members: list[_Member], template: TrainState, log: Callable[[str], None]) -> list[tuple]:
    """Each member's (trees, progress) at the newest step every member kept, falling back past damaged ones."""
    steps = set(members[0].latest.all_steps())
    for member in members[1:]:
        steps &= set(member.latest.all_steps())
    if not steps:
        raise CheckpointError(
            f"the runs {', '.join(str(m.run.path) for m in members)} trained side by side kept no checkpoint step in "
            "common; resume each alone, or start them again in new directories"
        )
    while True:
        restored = [member.latest.restore(checkpoint_trees(template), steps, fall_back=log) for member in members]
        reached = {int(trees["optimizer"]["step"]) for trees, _ in restored}
        if len(reached) == 1:
            return restored
        steps = {step for step in steps if step <= min(reached)}  # one member fell back: all go to its step


class _TooManyMembers(Exception):
    """The group's program does not fit the devices' memory budget; `at_once` members would."""

    def __init__(self, at_once: int, budget: Budget):
        super().__init__(budget.describe())
        self.at_once, self.budget = at_once, budget


# The share of a device's memory the members' program may take (the rest: decoded images placed on the device,
# `knifejax.train.placement.DEVICE_SHARE`, and the allocator's own slack).
MEMBERS_SHARE = 0.45


def step_memory_bytes(step, state: TrainState, cfg: TrainConfig, size: int, mesh, *extra) -> int | None:
    """Compile `step` for a batch of `cfg` (the compiled program serves the training that follows) and return XLA's
    account of its memory per device: arguments, outputs not aliased to them, temporaries (None: the backend gives
    none)."""
    batch = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
    images = jax.ShapeDtypeStruct((cfg.batch_size, size, size, 3), jnp.uint8, sharding=batch)
    labels = jax.ShapeDtypeStruct((cfg.batch_size,), jnp.int32, sharding=batch)
    stats = step.lower(state, images, labels, *extra).compile().memory_analysis()
    if stats is None:
        return None
    return stats.argument_size_in_bytes + stats.output_size_in_bytes - stats.alias_size_in_bytes + stats.temp_size_in_bytes


def _check_members_fit(members_step, state: TrainState, active: jax.Array, cfg: TrainConfig, size: int, mesh) -> None:
    """Raise `_TooManyMembers` when the members' step takes more than `MEMBERS_SHARE` of each device's memory."""
    needed = step_memory_bytes(members_step, state, cfg, size, mesh, active)
    if needed is None:  # a backend that gives no account: nothing to check against
        return
    budget = memory_budget(needed, MEMBERS_SHARE, mesh.local_devices)
    if budget.limit is not None and not budget.fits:
        count = len(active)
        raise _TooManyMembers(max(1, min(count - 1, int(count * MEMBERS_SHARE * budget.limit / needed))), budget)


class StepMemoryError(UserError, MemoryError):
    """One train step needs more memory than the device has: said before the first step, not as the allocator's
    out-of-memory traceback in the middle of it."""


def _check_step_fits(train_step, state: TrainState, cfg: TrainConfig, size: int, mesh) -> None:
    needed = step_memory_bytes(train_step, state, cfg, size, mesh)
    if needed is None:  # a backend that gives no account: nothing to check against
        return
    budget = memory_budget(needed, 1.0, mesh.local_devices)
    if budget.limit is not None and not budget.fits:
        raise StepMemoryError(
            f"one train step of {cfg.model} at {size} px, batch {cfg.batch_size}, {cfg.precision} needs, by XLA's "
            f"account of the compiled step, {budget.describe()}: lower --batch-size"
            f"{', train in bfloat16 (--precision bf16)' if cfg.precision != 'bf16' else ''}, or use a device with "
            "more memory"
        )


def _stack(states: list[TrainState]) -> TrainState:
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)


def _fit(cfgs: list[TrainConfig], runs: list[RunDir], held: contextlib.ExitStack, *, progress: bool,
         log: Callable[[str], None], in_group: bool) -> tuple[list[list[dict]], list[str]]:  # fmt: skip
    """Train `cfgs` into `runs`, side by side when there are several; (each run's metrics lines, why each member
    that stopped did). `in_group`: part of a `fit_many` group, whose members stop alone, not a run of `fit`."""
    is_main = jax.process_index() == 0
    cfg = cfgs[0]  # every field that is not a member's number is the same in all
    for run, member_cfg in zip(runs, cfgs):
        run.check_config(member_cfg)
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
    total_steps = cfg.epochs * steps_per_epoch  # what the schedule spans, a bound or not
    end_step = min(total_steps, cfg.max_steps or total_steps)
    end_epoch = -(-end_step // steps_per_epoch)  # the epochs it trains, the last perhaps cut short
    side_by_side = len(cfgs) > 1
    members = [_Member(c, run, total_steps, log, named=in_group) for c, run in zip(cfgs, runs)]
    model = build_model(cfg, num_classes)  # before the runs are written: a refused weights file leaves no run behind
    if is_main:
        for member in members:
            held.enter_context(member.run.lock())
        for member in members:
            member.run.start(member.cfg)
            member.run.write_classes(data.class_names)
            write_text_atomically(member.run.data_report, json.dumps(data.report, indent=1) + "\n")
        summary = model_summary(model, cfg, size)
        for member in members:
            member.run.write_model_summary(summary)
        log(f"{cfg.model}: {summary['parameters']:,} parameters, {summary['trainable_parameters']:,} trainable")
        if side_by_side:
            log(f"training {len(members)} runs side by side in one program (one data order, one compiled step)")
        if end_step < total_steps:
            log(f"--max-steps {cfg.max_steps}: training stops after step {end_step} of the {total_steps} "
                f"({cfg.epochs} epochs of {steps_per_epoch} steps) its learning-rate schedule spans")
    normalize = normalization(cfg.norm, model.pretrained_cfg)
    # The most general member's optimizer: a momentum buffer or a decay term if any member has one.
    optimizer = build_optimizer(
        dataclasses.replace(cfg, momentum=max(c.momentum for c in cfgs), weight_decay=max(c.weight_decay for c in cfgs)),
        model, total_steps,
    )  # fmt: skip
    frozen_bn = frozen_prefixes(model, cfg.freeze_stages) if cfg.frozen_bn_eval else ()
    graphdef, template = init_state(model, optimizer, frozen_bn, members[0].hyper)
    del model
    for member in members:
        member.open_checkpoints()
        held.callback(member.close)  # on every way out: Orbax's threads must not outlive a failed run
    states = [template._replace(hyper=member.hyper) for member in members]
    failures: list[str] = []
    for member in members:
        if in_group and member.run.stopped.exists():
            member.stopped = json.loads(member.run.stopped.read_text())["message"]
            failures.append(f"{member.run.path}: {member.stopped}")
            member.log(f"stopped before: {member.stopped}")
    going = [index for index, member in enumerate(members) if not member.stopped]
    if any(members[index].latest.latest_step() is not None for index in going):
        restored = _restore_together([members[index] for index in going], template, log)
        for index, (trees, saved) in zip(going, restored):
            member = members[index]
            model_trees, optimizer_trees = trees["model"], trees["optimizer"]
            states[index] = template._replace(params=model_trees["params"], rest=model_trees["rest"],
                                              opt_state=optimizer_trees["opt_state"], step=optimizer_trees["step"],
                                              hyper=member.hyper)  # fmt: skip
            member.progress, member.resumed = saved, True
            member.latest.discard_after(int(optimizer_trees["step"]))  # damaged steps, skipped: written again
        first = members[going[0]].progress
        log(f"resuming {', '.join(str(members[index].run.path) for index in going)} at epoch {first['epoch'] + 1}, "
            f"batch {first['batch']}")  # fmt: skip
    position = dict(members[going[0]].progress) if going else {"epoch": 0, "batch": 0}  # the group's data position
    # The lines logged after the checkpoint resumed from go; an epoch cut by --max-steps was logged before its save.
    reached = position["epoch"] * steps_per_epoch + position["batch"]
    logged = position["epoch"] + int(position["batch"] > 0 and reached >= end_step)
    if is_main:
        for member in members:
            member.run.keep_epochs_before(logged)
    for member in members:
        member.history = member.run.history()
        member.curves_lines = len(member.history)  # a resumed run's curves show the lines it resumes from
    state = replicate(_stack(states) if side_by_side else states[0], mesh)
    del states, template

    def member_state(index: int) -> TrainState:
        return jax.tree.map(lambda leaf: leaf[index], state) if side_by_side else state

    if side_by_side:
        members_step = make_members_train_step(graphdef, optimizer, normalize=normalize, precision=cfg.precision)
        active = np.array([member.stopped is None for member in members])
        _check_members_fit(members_step, state, jnp.asarray(active), cfg, size, mesh)

        def train_step(state, images, labels):
            return members_step(state, images, labels, jnp.asarray(active))
    else:
        train_step = make_train_step(graphdef, optimizer, normalize=normalize, precision=cfg.precision)
        _check_step_fits(train_step, state, cfg, size, mesh)
    eval_step = make_eval_step(graphdef, normalize=normalize, precision=cfg.precision)
    augment = augment_config(cfg, size)

    def stop(index: int, message: str) -> None:
        """A non-finite run: alone, it ends; in a group, the member stops and the others train on."""
        if is_main:
            _finish_curves(members[index])
        if not in_group:
            raise NonFiniteLossError(message)
        members[index].stopped = message
        if side_by_side:
            active[index] = False
        if is_main:
            write_text_atomically(members[index].run.stopped, json.dumps({"message": message}, indent=1) + "\n")
        failures.append(f"{members[index].run.path}: {message}")
        members[index].log(f"stopped: {message}")

    def save_latest(epoch: int, batch: int) -> None:
        for index, member in enumerate(members):
            if member.stopped:
                continue
            one = member_state(index)
            if not _all_finite(one.params):
                stop(index, f"the parameters became NaN or infinite by step {int(one.step)} (epoch {epoch + 1}); the "
                            f"run stopped before saving them, and {member.last_good()}; {member.advice()}")  # fmt: skip
                continue
            info = dict(member.progress, epoch=epoch, batch=batch, sums=member.sums.to_json())
            member.latest.save(int(one.step), checkpoint_trees(one), info)

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

    feed = dict(augment_cfg=augment, seed=cfg.seed, epoch=position["epoch"], start_batch=position["batch"],
                end_epoch=end_epoch, process_index=jax.process_index(), process_count=jax.process_count())
    val_placed = on_device(data.val)  # placed before the first epoch, so that its timings do not hold the copy
    if placement == "device":
        stream = device_train_batches(on_device(data.train), data.train.indices, cfg.batch_size, **feed)
    else:
        stream = _on_mesh(train_batches(data.train.data, data.train.indices, cfg.batch_size, workers=cfg.workers,
                                        **feed), mesh)  # fmt: skip
    for epoch in range(position["epoch"], end_epoch):
        start_batch = position["batch"] if epoch == position["epoch"] else 0
        epoch_steps = min(steps_per_epoch, end_step - epoch * steps_per_epoch)  # fewer in an epoch --max-steps cuts
        if all(member.stopped for member in members) or start_batch >= epoch_steps:  # all stopped, or cut here before
            break
        for member in members:
            member.sums = _EpochSums(member.progress["sums"] if epoch == position["epoch"] else None)
        batches = itertools.islice(stream, epoch_steps - start_batch)
        bar = tqdm(total=epoch_steps, initial=start_batch, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step",
                   disable=not (progress and is_main), dynamic_ncols=True)
        pending: tuple[int, dict] | None = None

        def consume() -> None:
            nonlocal pending
            if pending is None:
                return
            batch_number, metrics = pending
            pending = None
            metrics = jax.device_get(metrics)  # every member's numbers in one transfer
            for index, member in enumerate(members):
                if member.stopped:
                    continue
                one = jax.tree.map(lambda value: value[index], metrics) if side_by_side else metrics
                loss = member.sums.add(one)
                if not math.isfinite(loss):
                    stop(index, f"the training loss became {loss} at epoch {epoch + 1}, batch {batch_number + 1}; the "
                                f"run stopped and {member.last_good()}; {member.advice()}")  # fmt: skip
                    continue
                member.divergence.see(loss, position["step"])
            running = [member for member in members if not member.stopped]
            if running:
                sums = running[0].sums
                elapsed = sums.seconds + time.perf_counter() - started
                bar.set_postfix(
                    loss=f"{sums.loss / sums.steps:.4f}" + (f" (+{len(running) - 1})" if len(running) > 1 else ""),
                    map5=f"{sums.map5 / sums.steps:.3f}",
                    img_s=f"{sums.steps * cfg.batch_size * len(running) / elapsed:.1f}",
                )

        started = time.perf_counter()
        for batch_number, (images, labels) in enumerate(batches, start=start_batch):
            state, metrics = train_step(state, images, labels)
            position["step"] = epoch * steps_per_epoch + batch_number + 1
            consume()
            pending = (batch_number, metrics)
            bar.update(1)
            if not any(member.stopped is None for member in members):
                break
            if cfg.checkpoint_every and (batch_number + 1) % cfg.checkpoint_every == 0 and batch_number + 1 < epoch_steps:
                consume()
                seconds = time.perf_counter() - started
                for member in members:
                    member.sums.seconds += seconds
                started = time.perf_counter()
                save_latest(epoch, batch_number + 1)
        consume()
        bar.close()
        seconds = time.perf_counter() - started
        for member in members:
            member.sums.seconds += seconds
        running = sum(member.stopped is None for member in members)
        for index, member in enumerate(members):
            if not member.stopped:
                _end_epoch(member, member_state(index), epoch, data, val_placed, eval_step, mesh, is_main, running)
        # An epoch cut by --max-steps saves its position within the epoch: resumed, the run finds nothing left.
        save_latest(*divmod(epoch * steps_per_epoch + epoch_steps, steps_per_epoch))
        for member in members:
            member.sums = _EpochSums()

    stream.close()  # stops the worker processes now rather than at garbage collection
    if is_main:
        for member in members:  # finished, stopped or cut by --max-steps: the curves show every line
            _finish_curves(member)
    if data.test is not None:
        for index, member in enumerate(members):
            if member.stopped:
                continue
            test_logits = predict(partial(eval_step, member_state(index)), data.test, cfg.batch_size, mesh,
                                  on_device(data.test))  # fmt: skip
            test = evaluation_metrics(test_logits, data.test.labels) | standard_errors(test_logits, data.test.labels)
            if is_main:
                write_text_atomically(member.run.test_metrics, json.dumps({"model": "final", **test}, indent=1) + "\n")
            member.log(f"test: MAP@5 {test['map@5']:.4f}, MAP@1 {test['map@1']:.4f}, acc@5 {test['acc@5']:.4f}")
    return [member.history for member in members], failures


# curves.png is redrawn after an epoch once its last drawing is this old, and at the end of the run. A drawing takes
# ~0.2 s: after every epoch of a run whose epochs take seconds (the smoke and quick presets, the tests) that was a
# noticeable share of the run; for epochs of minutes this still redraws after each.
CURVES_EVERY_S = 30.0


def _draw_curves(member: _Member) -> None:
    plot_training_curves(member.history, member.run.curves, title=f"{member.cfg.model} — {member.run.path.name}")
    member.curves_drawn_at, member.curves_lines = time.perf_counter(), len(member.history)


def _finish_curves(member: _Member) -> None:
    """Draw the member's curves if they do not show every line of its history yet."""
    if member.curves_lines != len(member.history):
        _draw_curves(member)


def _end_epoch(member: _Member, state: TrainState, epoch: int, data, val_placed, eval_step, mesh, is_main: bool,
               together: int) -> None:  # fmt: skip
    """Evaluate one member after an epoch: its metrics line, curves and best checkpoint. `together`: how many runs
    trained side by side in the epoch; `images_per_s` is theirs together, the speed of the program."""
    cfg, sums = member.cfg, member.sums
    eval_started = time.perf_counter()
    val_logits = predict(partial(eval_step, state), data.val, cfg.batch_size, mesh, val_placed)
    val = evaluation_metrics(val_logits, data.val.labels) | standard_errors(val_logits, data.val.labels)
    line = {
        "epoch": epoch,
        "step": int(state.step),
        "lr": float(current_learning_rate(state.opt_state)),
        "train_loss": sums.loss / sums.steps,
        "train_map@5": sums.map5 / sums.steps,
        **{f"val_{k}": v for k, v in val.items()},
        "train_seconds": sums.seconds,
        "eval_seconds": time.perf_counter() - eval_started,
        "images_per_s": together * sums.steps * cfg.batch_size / sums.seconds,
    }
    member.history.append(line)
    if is_main:
        member.run.append_metrics(line)
        if time.perf_counter() - member.curves_drawn_at >= CURVES_EVERY_S:
            _draw_curves(member)
    bound = f" (step {line['step']}: --max-steps ends the run here)" if line["step"] == cfg.max_steps else ""
    member.log(
        f"epoch {epoch + 1}/{cfg.epochs}{bound}: train loss {line['train_loss']:.4f}, val loss {val['loss']:.4f}, "
        f"val MAP@5 {val['map@5']:.4f}, MAP@1 {val['map@1']:.4f}, acc@5 {val['acc@5']:.4f}"
    )
    if val["map@5"] > member.progress["best_map5"]:
        member.progress.update(best_map5=val["map@5"], best_epoch=epoch)
        member.best.save(epoch, {"model": checkpoint_trees(state)["model"]}, dict(member.progress, epoch=epoch + 1))
