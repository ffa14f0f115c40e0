"""Does something fit in a device's memory? One answer for every caller that must choose before allocating.

An accelerator reports its limit (`device.memory_stats()["bytes_limit"]`: what the allocator may use). A CPU
device reports none: it allocates from the machine's RAM, so the limit is the memory the kernel says is
available (`MemAvailable` of /proc/meminfo), shared by every CPU device of the process. Only a `share` of the
limit is offered, since the same memory also holds the model, its optimiser state and the step's activations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jax

MEMINFO = Path("/proc/meminfo")


@dataclass(frozen=True)
class Budget:
    """`needed` bytes per device against `share` of each device's `limit`, as reported by `source`."""

    needed: int
    limit: int | None
    share: float
    source: str

    @property
    def fits(self) -> bool:
        return self.limit is not None and self.needed <= self.share * self.limit

    def describe(self) -> str:
        """E.g. '1.40 GiB per device, within 50% of 139.80 GiB (bytes_limit of cuda:0)'."""
        if self.limit is None:
            return f"{_gib(self.needed)} per device, against an unknown limit ({self.source})"
        verb = "within" if self.fits else "over"
        return f"{_gib(self.needed)} per device, {verb} {self.share:.0%} of {_gib(self.limit)} ({self.source})"


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def available_ram(meminfo: Path = MEMINFO) -> int | None:
    """The machine's available RAM in bytes (`MemAvailable`), or None where the kernel does not say."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def device_limit(devices: Sequence[jax.Device]) -> tuple[int | None, str]:
    """(bytes each of `devices` can hold, where that figure comes from): the smallest reported limit of an
    accelerator, or a CPU's share of the available RAM (divided among the CPU devices, which all use it)."""
    limits = [(device.memory_stats() or {}).get("bytes_limit") for device in devices]
    if all(limit is not None for limit in limits):
        smallest = min(range(len(devices)), key=lambda i: limits[i])
        return int(limits[smallest]), f"bytes_limit of {devices[smallest]}"
    if any(device.platform != "cpu" for device in devices):
        return None, f"{devices[limits.index(None)]} reports no memory limit"
    ram = available_ram()
    if ram is None:
        return None, f"{devices[0]} reports no memory limit and the machine's available RAM is unknown"
    return ram // len(devices), f"the machine's available RAM, MemAvailable, over {len(devices)} device(s)"


def memory_budget(needed: int, share: float, devices: Sequence[jax.Device] | None = None,
                  limit: int | None = None) -> Budget:  # fmt: skip
    """Whether `needed` bytes on each of `devices` (default: this process's) fit in `share` of each one's
    memory. `limit` states the bytes per device instead of asking the devices (a caller that knows better)."""
    if limit is not None:
        return Budget(needed, limit, share, "the stated limit")
    limit, source = device_limit(jax.local_devices() if devices is None else devices)
    return Budget(needed, limit, share, source)
