"""Test setup: 8 fake CPU devices for the sharding tests (before JAX is imported)."""

import os
import sys

# The tests' programs are tiny and run a few steps: compiling them is most of the suite's
# time, and LLVM's optimisation level 0 compiles in about half the time (the pipeline
# test: 512 s -> 370 s on one core) with the same numerics.
# Subprocesses that set their own XLA_FLAGS add FAST_COMPILE to them.
FAST_COMPILE = "--xla_backend_optimization_level=0"
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count=8 {FAST_COMPILE}")
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


# The longest test files first (seconds on 2 cores, December 2026): `--dist loadfile`
# hands out files in collection order, so a long file collected late leaves the other
# worker idle at the end. Longest-first keeps the two workers' totals close.
LONG_FILES = {"test_pipeline.py": 270, "test_multihost.py": 280, "test_stage1_normalize.py": 150,
              "test_stage1_train.py": 150, "test_benchmark.py": 150,
              "test_perception_train.py": 140, "test_mae.py": 90, "test_train_stage2.py": 90,
              "test_interop_deepfn.py": 80, "test_deepfn_train.py": 80}


def pytest_collection_modifyitems(config, items):
  items.sort(key=lambda item: -LONG_FILES.get(item.path.name, 0))
