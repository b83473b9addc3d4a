"""Test setup: 8 fake CPU devices for the sharding tests (before JAX is imported)."""

import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# launch/ scripts are run as files, not a package; tests import them by path.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Many tests compile the same tiny programs (a resumed run, a second process, another
# fold): a persistent compilation cache, keyed on the HLO, compiles each once. The
# subprocesses the tests start inherit these variables.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(ROOT, ".jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)
