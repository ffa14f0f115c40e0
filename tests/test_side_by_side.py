"""Runs side by side (`fit_many`): members stacked on a leading axis under one vmapped step equal the same runs
trained alone, resume together exactly, and a member that diverges stops alone.

Tolerance: members and single runs are the same float32 arithmetic but for the convolutions, which a vmap over
stacked kernels turns into one grouped convolution that sums in another order (about 1e-7 relative per step).
Adam and RMSprop divide by the gradient's running magnitude, which carries such a difference into the update at
the same relative size; after the few steps these tests take it stays below 1e-5 relative (atol 1e-6 for
parameters near zero). The one exception is a parameter whose gradient is zero but for rounding, such as a
convolution's bias before BatchNorm: Adam scales that rounding to full-size steps in no meaningful direction, in a
member as in any two runs alone that round differently. The test model has none, as timm's networks have none.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import knifejax as kj
from knifejax.memory import Budget
from knifejax.train import loop
from knifejax.train.checkpoint import Checkpoints
from knifejax.train.config import TrainConfig
from knifejax.train.loop import DivergenceWarning, NonFiniteLossError, fit, fit_many
from knifejax.train.run import RunDir
from knifejax.train.steps import init_state, make_members_train_step, make_train_step
from tests.tiny_model import TINY, EveryCpuPath

pytestmark = pytest.mark.usefixtures("tiny_model")

RTOL, ATOL = 1e-5, 1e-6


def _batches(steps=4, n=6, size=8, classes=5):
    rng = np.random.default_rng(0)
    return [(rng.standard_normal((n, size, size, 3), dtype=np.float32), rng.integers(0, classes, n)) for _ in range(steps)]


# Per optimizer family, three members that differ in rate, schedule, warm-up, momentum and weight decay.
MEMBERS = {
    "sgd": [dict(learning_rate=0.1), dict(learning_rate=0.03, schedule="cosine", total_steps=4),
            dict(learning_rate=0.05, schedule="cosine", total_steps=4, warmup_steps=1, weight_decay=0.01)],
    "sgd-momentum": [dict(learning_rate=0.05, momentum=0.9), dict(learning_rate=0.1),
                     dict(learning_rate=0.02, schedule="cosine", total_steps=4, momentum=0.5, weight_decay=0.05)],
    "adam": [dict(learning_rate=1e-2), dict(learning_rate=1e-3, schedule="cosine", total_steps=4),
             dict(learning_rate=3e-3, schedule="cosine", total_steps=4, warmup_steps=2, weight_decay=0.01)],
    "rmsprop": [dict(learning_rate=1e-3), dict(learning_rate=1e-2, schedule="cosine", total_steps=4, momentum=0.9),
                dict(learning_rate=3e-3, weight_decay=0.01)],
}  # fmt: skip


@pytest.mark.parametrize("family", [family if family in ("sgd", "adam") else pytest.param(family, marks=pytest.mark.slow)
                                    for family in MEMBERS])  # momentum's and RMSProp's buffers: in the whole suite
def test_members_side_by_side_equal_each_run_alone(family):
    name = family.split("-")[0]
    members = MEMBERS[family]
    numbers = [kj.train.hyperparameters(label_smoothing=0.1 * i, **m) for i, m in enumerate(members)]
    most_general = dict(momentum=max(m.get("momentum", 0.0) for m in members),
                        weight_decay=max(m.get("weight_decay", 0.0) for m in members))  # fmt: skip
    group_optimizer = kj.make_optimizer(name, 1.0, **most_general)
    graphdef = nnx.graphdef(EveryCpuPath(5, rngs=nnx.Rngs(0)))
    _, start = init_state(EveryCpuPath(5, rngs=nnx.Rngs(0)), group_optimizer)
    states = jax.tree.map(lambda *xs: jnp.stack(xs), *[start._replace(hyper=h) for h in numbers])
    step = make_members_train_step(graphdef, group_optimizer)
    active = jnp.ones(len(members), bool)
    for images, labels in _batches():
        states, metrics = step(states, images, labels, active)

    for index, (member, hyper) in enumerate(zip(members, numbers)):
        own = kj.make_optimizer(name, **member)  # its own structure: no momentum buffer or decay term it does not use
        _, alone = init_state(EveryCpuPath(5, rngs=nnx.Rngs(0)), own, hyper=hyper)
        alone_step = make_train_step(graphdef, own)
        for images, labels in _batches():
            alone, alone_metrics = alone_step(alone, images, labels)
        np.testing.assert_allclose(float(metrics["loss"][index]), float(alone_metrics["loss"]), rtol=RTOL)
        assert float(kj.current_learning_rate(jax.tree.map(lambda x: x[index], states.opt_state))) == pytest.approx(
            float(kj.current_learning_rate(alone.opt_state)), rel=1e-6)  # fmt: skip
        for a, b in zip(jax.tree.leaves(states.params), jax.tree.leaves(alone.params), strict=True):
            np.testing.assert_allclose(np.asarray(a[index]), np.asarray(b), rtol=RTOL, atol=ATOL)
        for a, b in zip(jax.tree.leaves(states.rest), jax.tree.leaves(alone.rest), strict=True):
            np.testing.assert_allclose(np.asarray(a[index]), np.asarray(b), rtol=RTOL, atol=ATOL)


def test_an_inactive_member_keeps_its_state_exactly():
    optimizer = kj.make_optimizer("adam", 1e-2)
    graphdef = nnx.graphdef(EveryCpuPath(5, rngs=nnx.Rngs(0)))
    _, start = init_state(EveryCpuPath(5, rngs=nnx.Rngs(0)), optimizer, hyper=kj.train.hyperparameters(1e-2))
    states = jax.tree.map(lambda *xs: jnp.stack(xs), start, start)
    before = jax.tree.map(lambda x: np.asarray(x[1]), states)
    step = make_members_train_step(graphdef, optimizer)
    for images, labels in _batches(steps=2):
        states, _ = step(states, images, labels, jnp.asarray([True, False]))
    after = jax.tree.map(lambda x: np.asarray(x[1]), states)
    for a, b in zip(jax.tree.leaves(after), jax.tree.leaves(before), strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(states.step[0]) == 2 and int(states.step[1]) == 0


# Three SGD runs of the tiny CNN on synthetic knives, one epoch of three steps, a checkpoint after each: two that
# train (the one program of runs alone serves both), one whose rate makes its loss explode.
_BASE = dict(model=TINY, data="synthetic", val_data="synthetic", test_data="synthetic", synthetic_classes=4,
             synthetic_per_class=6, image_size=32, epochs=1, batch_size=8, optimizer="sgd", checkpoint_every=1)
GROUP = [TrainConfig(**_BASE, lr=0.05, schedule="cosine"), TrainConfig(**_BASE, lr=0.02), TrainConfig(**_BASE, lr=1e6)]
TIMING = ("train_seconds", "eval_seconds", "images_per_s")


def _untimed(lines):
    return [{k: v for k, v in line.items() if k not in TIMING} for line in lines]


def _fit_group(folder):
    with pytest.raises(NonFiniteLossError) as stopped:
        fit_many(GROUP, [folder / f"member{i}" for i in range(len(GROUP))], progress=False, log=lambda m: None)
    return str(stopped.value)


@pytest.fixture(scope="module")
def group(tmp_path_factory):
    folder = tmp_path_factory.mktemp("group")
    with pytest.warns(DivergenceWarning, match="member2: the training loss grew from .* by step 2"):
        return folder, _fit_group(folder)


@pytest.mark.slow
def test_group_members_equal_runs_alone_and_a_diverging_member_stops_alone(group, tmp_path, monkeypatch):
    folder, message = group
    assert "1 of 3 runs trained side by side stopped (the others finished)" in message
    assert str(folder / "member2") in message and "lower the learning rate" in message
    stopped = RunDir(folder / "member2")
    assert json.loads(stopped.stopped.read_text())["message"] in message
    assert not stopped.test_metrics.exists() and not (folder / "member0" / "stopped.json").exists()

    for index in (0, 1):
        alone = fit(GROUP[index], tmp_path / f"alone{index}", progress=False, log=lambda m: None)
        member = RunDir(folder / f"member{index}")
        assert len(member.history()) == len(alone) == 1
        for together, single in zip(member.history(), alone, strict=True):
            assert together.keys() == single.keys()
            for key in together.keys() - set(TIMING):
                assert together[key] == pytest.approx(single[key], rel=RTOL, abs=ATOL), key
        test_together = json.loads(member.test_metrics.read_text())
        test_alone = json.loads(RunDir(tmp_path / f"alone{index}").test_metrics.read_text())
        assert test_together.pop("model") == test_alone.pop("model") == "final"
        assert test_together == pytest.approx(test_alone, rel=RTOL, abs=ATOL)
        model, cfg, classes = kj.load_run(folder / f"member{index}", "latest")
        assert cfg == GROUP[index] and len(classes) == 4

    # Two members that do not fit the memory budget side by side train one at a time: exactly as alone.
    def small_device(needed, share, devices=None, limit=None):  # too small for the group, large enough for one run
        return Budget(needed, int(0.6 * needed / share) if share == loop.MEMBERS_SHARE else needed, share, "a limit")

    monkeypatch.setattr(loop, "memory_budget", small_device)
    said = []
    fit_many(GROUP[:2], [tmp_path / "split0", tmp_path / "split1"], progress=False, log=said.append)
    assert any(line.startswith("2 runs side by side need") and "training them 1 at a time" in line for line in said)
    for index in (0, 1):
        split, alone = RunDir(tmp_path / f"split{index}"), RunDir(tmp_path / f"alone{index}")
        assert _untimed(split.history()) == _untimed(alone.history())
        assert split.test_metrics.read_text() == alone.test_metrics.read_text()


@pytest.mark.slow
def test_a_group_killed_between_two_members_saves_resumes_bitwise(group, tmp_path, monkeypatch):
    folder, message = group
    saves = []
    save = Checkpoints.save

    def dies_between_two_members(self, step, trees, progress):
        saves.append((self.directory.parent.parent.name, step))
        if saves[-1] == ("member1", 2):  # member 0 has saved step 2, member 1 never will
            raise KeyboardInterrupt
        save(self, step, trees, progress)

    monkeypatch.setattr(Checkpoints, "save", dies_between_two_members)
    with pytest.raises(KeyboardInterrupt), pytest.warns(DivergenceWarning, match="member2: the training"):
        fit_many(GROUP, [tmp_path / f"member{i}" for i in range(3)], progress=False, log=lambda m: None)
    assert ("member0", 2) in saves
    monkeypatch.setattr(Checkpoints, "save", save)
    # Resumed, member2's divergence watch takes its first loss after the resumed step (already far up), so whether it
    # warns again before the NaN depends on the network; the stop and its message must be the same.
    resumed_message = _fit_group(tmp_path).replace(" (the checkpoint it resumed from was verified when read: the training diverged)", "")
    assert resumed_message == message.replace(str(folder), str(tmp_path))  # the same member stopped at the same step

    for index in (0, 1):
        resumed, reference = RunDir(tmp_path / f"member{index}"), RunDir(folder / f"member{index}")
        assert _untimed(resumed.history()) == _untimed(reference.history())
        assert resumed.test_metrics.read_text() == reference.test_metrics.read_text()
        a, _, _ = kj.load_run(resumed.path, "latest")
        b, _, _ = kj.load_run(reference.path, "latest")
        for x, y in zip(jax.tree.leaves(nnx.state(a)), jax.tree.leaves(nnx.state(b)), strict=True):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# Each experiment's study-preset runs as the runner groups them for training (two seeds, all runs new): the runs that
# differ only in the recipe's numbers share one program; another architecture, batch size, optimizer family, stage
# freezing or seed is another program.
EXPECTED_GROUPS = {
    "sweep_lr": [["lr=1e-2", "lr=1e-3", "lr=5e-4", "lr=1e-4", "lr=1e-5"]] * 2,
    "sweep_scheduler": [[f"lr={lr} {kind}" for lr in ("1e-2", "1e-3", "5e-4", "1e-4", "1e-5")
                         for kind in ("constant", "cosine")]] * 2,  # fmt: skip
    "sweep_batch": [["batch 16"]] * 2 + [["batch 32"]] * 2 + [["batch 64"]] * 2,
    "compare_optimizers": [["SGD", "SGD momentum 0.9"]] * 2 + [["Adam"]] * 2,
    "transfer_modes": [["from scratch"]] * 2 + [["transfer (all layers train)"]] * 2
                      + [["fine-tune (first 4 stages frozen)"]] * 2,  # fmt: skip
    "compare_architectures": [[name] for name in ("EfficientNet-B0", "ResNet-18", "MobileNetV3-Large", "SKResNet-18",
                                                  "EfficientNet-B3, 55 epochs") for _ in range(2)],  # fmt: skip
}


@pytest.mark.parametrize("name", EXPECTED_GROUPS)
def test_the_runner_trains_side_by_side_what_differs_only_in_numbers(name, tmp_path):
    import importlib

    from experiments import runner
    from experiments.presets import PRESETS

    experiment = importlib.import_module(f"experiments.{name}").EXPERIMENT
    args = runner.parser(experiment).parse_args(["--preset", "study", "--seeds", "2"])
    runs = runner.plan(experiment, PRESETS["study"], args, tmp_path)
    groups = runner.side_by_side(runs, vectorize=True)
    assert [[runs[i].setting for i in group] for group in groups] == EXPECTED_GROUPS[name]
    assert all(len({runs[i].seed for i in group}) == 1 for group in groups)
    assert runner.side_by_side(runs, vectorize=False) == [[i] for i in range(len(runs))]


def test_the_runner_groups_interrupted_runs_only_with_a_checkpoint_step_in_common(tmp_path):
    from experiments import runner
    from experiments.runner import PlannedRun

    runs = [PlannedRun(f"lr={lr}", 0, TrainConfig(lr=lr), tmp_path / f"run{i}") for i, lr in enumerate((1e-3, 1e-4, 1e-5, 1e-2))]
    for index, steps in ((1, (10, 20)), (2, (20, 30)), (3, (40,))):
        for step in steps:
            (RunDir(runs[index].path).latest / str(step)).mkdir(parents=True)
    # run0 is new; run1 and run2 both kept step 20 (killed between their saves of step 30); run3 shares no step
    assert runner.side_by_side(runs, vectorize=True) == [[0], [1, 2], [3]]
