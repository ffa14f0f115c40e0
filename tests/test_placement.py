"""`--data-placement auto` chooses by the memory budget and the augmentation, and says why in one line; a run may
resume with another placement; the memory-budget helper reads an accelerator's limit or the machine's available
RAM."""

import jax
import pytest

from knifejax.data import SyntheticKnives
from knifejax.data.cache import decode_source
from knifejax.data.device_batches import device_bytes
from knifejax.data.transforms import Augment
from knifejax.errors import ConfigError
from knifejax.memory import available_ram, device_limit, memory_budget
from knifejax.train.config import TrainConfig
from knifejax.train.placement import choose_placement
from knifejax.train.run import RunDir


@pytest.fixture(scope="module")
def decoded():
    return decode_source(SyntheticKnives(2, 2, size=16), 16, cache_dir=None)


def test_auto_takes_the_host_when_the_budget_is_too_small_and_says_why(decoded):
    lines = []
    needed = device_bytes(decoded)
    assert choose_placement("auto", Augment(size=16), [decoded, decoded], jax.devices(), lines.append,
                            limit=needed) == "host"  # fmt: skip
    assert lines == [
        f"data placement: host (auto: the decoded images take {needed / 2**30:.2f} GiB per device, over 50% of "
        f"{needed / 2**30:.2f} GiB (the stated limit))"
    ]  # the training set counted once although the validation split shares it
    assert choose_placement("auto", Augment(size=16), [decoded], jax.devices(), lines.append, limit=2 * needed) == "device"
    assert lines[-1].startswith("data placement: device (auto: the decoded images take")
    with pytest.raises(ConfigError, match="--data-placement device: the decoded images take .* over 100%"):
        choose_placement("device", None, [decoded], jax.devices(), lines.append, limit=needed - 1)


def test_auto_takes_the_host_for_jitter_only_the_host_implements(decoded):
    lines = []
    assert choose_placement("auto", Augment(size=16, saturation=0.3), [decoded], jax.devices(), lines.append) == "host"
    assert lines == ["data placement: host (auto: saturation jitter runs only on the host)"]
    assert choose_placement("device", None, [decoded], jax.devices(), lines.append) == "device"
    assert lines[-1] == "data placement: device (as asked)"


def test_device_placement_with_host_only_jitter_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="--data-placement device does not implement contrast jitter"):
        TrainConfig(data_placement="device", contrast=0.2)
    TrainConfig(data_placement="device", contrast=0.2, augment=False)  # nothing to augment: fine


class _Accelerator:
    platform = "gpu"

    def __init__(self, name, limit):
        self.name, self.limit = name, limit

    def memory_stats(self):
        return None if self.limit is None else {"bytes_limit": self.limit, "bytes_in_use": 0}

    def __str__(self):
        return self.name


def test_the_budget_uses_the_smallest_accelerator_limit_or_the_available_ram(tmp_path):
    gpus = [_Accelerator("gpu:0", 80 * 2**30), _Accelerator("gpu:1", 40 * 2**30)]
    assert device_limit(gpus) == (40 * 2**30, "bytes_limit of gpu:1")
    assert memory_budget(20 * 2**30, 0.5, gpus).fits
    assert not memory_budget(20 * 2**30 + 1, 0.5, gpus).fits
    silent = [*gpus, _Accelerator("gpu:2", None)]  # an accelerator that reports nothing: unknown, not the host's RAM
    assert device_limit(silent) == (None, "gpu:2 reports no memory limit")
    assert not memory_budget(1, 0.5, silent).fits
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       32000000 kB\nMemFree:         1000 kB\nMemAvailable:   20000000 kB\n")
    assert available_ram(meminfo) == 20000000 * 1024
    assert available_ram(tmp_path / "missing") is None
    limit, source = device_limit(jax.devices("cpu"))  # a CPU reports no limit: the machine's available RAM
    assert limit is None or limit > 0
    assert "MemAvailable" in source or "unknown" in source


def test_a_run_may_resume_with_another_placement(tmp_path):
    run = RunDir(tmp_path / "run")
    run.start(TrainConfig(data_placement="host"))
    run.check_config(TrainConfig(seed=1))  # nothing trained yet: nothing to resume, any configuration goes
    run.append_metrics({"epoch": 0, "step": 1})
    run.check_config(TrainConfig(data_placement="device"))  # the same batches either way: accepted
    with pytest.raises(ConfigError, match="another configuration"):
        run.check_config(TrainConfig(data_placement="device", seed=1))
