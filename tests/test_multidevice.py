"""Data parallelism over 4 forced CPU devices gives one device's loss, gradients and parameters (1e-5)."""

import os
import subprocess
import sys
from pathlib import Path


def test_four_devices_equal_one():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, "-m", "tests.multidevice_check"],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 devices equal 1" in result.stdout
