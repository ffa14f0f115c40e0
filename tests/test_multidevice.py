"""Data parallelism over 4 forced CPU devices gives one device's losses, parameters and statistics (1e-5), and the
images placed on the 4 devices give the host pipeline's batches and parameters, bit for bit."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a subprocess with four CPU devices trains


def test_four_devices_equal_one():
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4".strip()
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
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
