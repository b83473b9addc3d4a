"""The project's XLA:CPU flag defaults (norface_jax/xla_cpu.py): added once, never over a
flag the user set, and in XLA_FLAGS before JAX's backend starts."""

import os
import subprocess
import sys

from norface_jax import xla_cpu

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_defaults_are_added_unless_given():
  env = {}
  assert xla_cpu.apply(env) == " ".join(xla_cpu.DEFAULTS)
  assert xla_cpu.apply(env) == " ".join(xla_cpu.DEFAULTS)  # Not twice.
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  assert xla_cpu.apply(env).split() == ["--xla_force_host_platform_device_count=8",
                                        *xla_cpu.DEFAULTS]
  mine = "--xla_cpu_experimental_ynn_fusion_type=+dot"
  assert xla_cpu.apply({"XLA_FLAGS": mine}) == mine  # The user's value wins.
  assert xla_cpu.apply({"XLA_FLAGS": "", "NORFACE_XLA_CPU_DEFAULTS": "0"}) == ""


def test_importing_the_package_sets_them_before_the_backend_starts():
  code = ("import os, norface_jax, jax; jax.numpy.ones(2).block_until_ready(); "
          "print(os.environ['XLA_FLAGS'])")
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  out = subprocess.run([sys.executable, "-c", code], env=dict(env, JAX_PLATFORMS="cpu"),
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.split() == list(xla_cpu.DEFAULTS)
  # In this process too (conftest set XLA_FLAGS before the package was imported).
  assert all(f in os.environ["XLA_FLAGS"].split() for f in xla_cpu.DEFAULTS)
