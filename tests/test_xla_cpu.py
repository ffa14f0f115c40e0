"""`import knifejax` (and drawing its figures) leaves `XLA_FLAGS` and matplotlib's backend alone;
`knifejax.apply_xla_cpu_flags()` sets XLA:CPU's convolutions and matrix products to Eigen, leaves a user's own
setting alone, and warns when it comes too late to apply."""

import os
import subprocess
import sys

import pytest

from knifejax.xla_cpu import EIGEN_CONVOLUTIONS_AND_DOTS, FLAG


def run(code: str, xla_flags: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if xla_flags is not None:
        env["XLA_FLAGS"] = xla_flags
    return subprocess.run([sys.executable, "-W", "always", "-c", code], env=env, capture_output=True, text=True, check=True)


def test_import_and_figures_change_neither_xla_flags_nor_the_matplotlib_backend_nor_start_jax():
    code = (
        "import matplotlib; matplotlib.use('svg'); import os, sys, tempfile; import numpy as np; import knifejax\n"
        "from jax._src import xla_bridge\n"
        "from knifejax.explain.overlay import plot_grid\n"
        "from knifejax.plots import plot_training_curves\n"
        "started = xla_bridge.backends_are_initialized()\n"
        "out = tempfile.mkdtemp()\n"
        "plot_grid([np.zeros((8, 8, 3), np.uint8)], [np.zeros((8, 8))], ['x'], out + '/grid.png')\n"
        "line = dict(epoch=0, train_loss=1.0, val_loss=1.0, **{'val_map@5': 0.5, 'val_map@1': 0.3, 'train_map@5': 0.4})\n"
        "plot_training_curves([line], out + '/curves.png')\n"
        "print(matplotlib.get_backend(), os.environ.get('XLA_FLAGS'), started, 'matplotlib.pyplot' in sys.modules)"
    )
    assert run(code, None).stdout.split() == ["svg", "None", "False", "False"]


@pytest.mark.slow
def test_the_call_adds_the_flag_to_the_users_flags_and_leaves_a_user_setting_alone():
    code = (
        "import os, knifejax, jax; knifejax.apply_xla_cpu_flags(); jax.numpy.ones(1).block_until_ready(); "
        "print(os.environ['XLA_FLAGS'])"
    )
    added = run(code, "--xla_force_host_platform_device_count=2").stdout.strip()
    assert added == f"--xla_force_host_platform_device_count=2 {FLAG}={EIGEN_CONVOLUTIONS_AND_DOTS}"
    own = f"{FLAG}=+individual_dot"
    assert run(code, own).stdout.strip() == own


@pytest.mark.slow
def test_the_call_after_the_cpu_backend_started_warns_and_changes_nothing():
    code = (
        "import os, jax, knifejax; jax.numpy.ones(1).block_until_ready(); knifejax.apply_xla_cpu_flags(); "
        "print(os.environ.get('XLA_FLAGS'))"
    )
    result = run(code, None)
    assert result.stdout.strip() == "None"
    assert "called after JAX started its CPU backend" in result.stderr and FLAG in result.stderr
