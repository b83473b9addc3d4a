"""Test setup: 8 fake CPU devices for the sharding tests (before JAX is imported)."""

import os
import sys

# The tests' programs are tiny and run a few steps: compiling them is most of the suite's
# time. LLVM's optimisation level 0 compiles in about half the time (the pipeline test:
# 512 s -> 370 s on one core); XLA:CPU's older loop emitters instead of its fusion
# emitters, without LLVM's expensive passes, compile the tiny stage-1 and stage-2
# trainers' programs 1.8x faster again (XLA backend compile 30-36 s -> 16-20 s, the two
# runs 45-53 s -> 30-37 s: `taskset -c 0 python tests/compile_flags.py`).
# Not --xla_cpu_parallel_codegen_split_count=1: with the loop emitters it miscompiled
# augment.color_jitter (jitted and eager results differed; tests/test_augment.py).
# Tests compare runs made under the same flags.
# Subprocesses that set their own XLA_FLAGS add FAST_COMPILE to them.
FAST_COMPILE = ("--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false "
                "--xla_llvm_disable_expensive_passes=true")
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


# The order files are handed to the workers: `--dist loadfile` with
# `--no-loadscope-reorder` (tests/run.sh) hands them out in collection order, so a long
# file collected late leaves the other worker idle at the end, and long files go first.
# One exception: the multi-host file's 1-process reference trains the tiny configs of
# the four trainer files, so it runs after them and finds their programs in the
# persistent compilation cache. Seconds on 2 cores: `bash tests/run.sh --durations=0`,
# December 2026, summed per file.
ORDER = ("test_pipeline.py", "test_stage1_train.py", "test_train_stage2.py",
         "test_perception_train.py", "test_mae.py", "test_multihost.py")
LONG_FILES = {"test_benchmark.py": 93, "test_stage1_normalize.py": 70,
              "test_stage_guarantees.py": 70, "test_prepared_data.py": 54,
              "test_stage2_tools.py": 48, "test_deepfn_resume.py": 43,
              "test_interop_twins.py": 40, "test_perception_import.py": 35,
              "test_deepfn_train.py": 28, "test_reproduce.py": 25}


def pytest_collection_modifyitems(config, items):
  def rank(item):
    name = item.path.name
    return (ORDER.index(name), 0) if name in ORDER else (len(ORDER), -LONG_FILES.get(name, 0))
  items.sort(key=rank)


def assert_params_close(want, got, *, rtol: float, atol: float, key_bias_atol: float) -> None:
  """Parameter trees equal leaf by leaf, except the attention key bias (b_k in qkv/bias,
  index 1 of its fused q/k/v axis): q . b_k adds the same logit to every key of a row, so
  its true gradient is zero, and AdamW turns the float noise left in it into steps of
  about the learning rate whose sign differs between two equivalent computations. It is
  held to `key_bias_atol` (a few learning-rate steps) instead."""
  import jax
  import numpy as np
  flat_want = jax.tree_util.tree_flatten_with_path(want)[0]
  flat_got = jax.tree.leaves(got)
  assert len(flat_want) == len(flat_got)
  for (path, a), b in zip(flat_want, flat_got):
    name = jax.tree_util.keystr(path)
    a, b = np.asarray(a), np.asarray(b)
    if "qkv" in name and "bias" in name:
      k = a.ndim - 3  # the fused q/k/v axis of (..., 3, H, Dh)
      take = lambda x, i: np.take(x, i, axis=k)  # noqa: E731
      for i in (0, 2):
        np.testing.assert_allclose(take(a, i), take(b, i), rtol=rtol, atol=atol, err_msg=name)
      np.testing.assert_allclose(take(a, 1), take(b, 1), rtol=0, atol=key_bias_atol, err_msg=name)
    else:
      np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=name)
