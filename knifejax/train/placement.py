"""Where a run keeps its decoded images: `device` (once in accelerator memory, batches made there) or `host` (grain
workers make each batch and send it), and how `auto` chooses between them.

`device` needs no host cores per step, which fast accelerators with few host cores lack; `host` serves sets too
large for the device and the augmentations only the host implements (contrast, saturation, hue). Both give the
same batches, bit for bit, so the choice changes speed, never results, and a resumed run may change it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax

from knifejax.data.cache import DecodedImages
from knifejax.data.device_augment import unsupported
from knifejax.data.device_batches import device_bytes
from knifejax.data.transforms import Augment
from knifejax.errors import ConfigError
from knifejax.memory import memory_budget

PLACEMENTS = ("auto", "device", "host")
# The share of a device's memory the decoded images may take under `auto`: the rest is the model's, its
# optimiser state's and the step's activations'.
DEVICE_SHARE = 0.5


def choose_placement(
    asked: str,
    augment_cfg: Augment | None,
    datasets: Sequence[DecodedImages],
    devices: Sequence[jax.Device],
    log: Callable[[str], None],
    limit: int | None = None,
) -> str:
    """`asked` unless it is "auto"; then "device" when the distinct `datasets` fit in `DEVICE_SHARE` of each of
    `devices`' memory (`limit`: the bytes per device, instead of what the devices report) and the device
    augmentation implements `augment_cfg`, otherwise "host". Logs the choice and why in one line. An asked
    "device" that cannot fit in the whole of a known limit is refused (`ConfigError`)."""
    distinct = {id(data): data for data in datasets}.values()
    needed = sum(device_bytes(data) for data in distinct)
    everything = memory_budget(needed, 1.0, devices, limit) if asked == "device" else None
    if everything is not None and everything.limit is not None and not everything.fits:
        raise ConfigError(
            f"--data-placement device: the decoded images take {everything.describe()}; use --data-placement host "
            "(or auto)"
        )
    if asked != "auto":
        log(f"data placement: {asked} (as asked)")
        return asked
    if augment_cfg is not None and unsupported(augment_cfg):
        log(f"data placement: host (auto: {', '.join(unsupported(augment_cfg))} jitter runs only on the host)")
        return "host"
    budget = memory_budget(needed, DEVICE_SHARE, devices, limit)
    choice = "device" if budget.fits else "host"
    log(f"data placement: {choice} (auto: the decoded images take {budget.describe()})")
    return choice
