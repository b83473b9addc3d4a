"""How long the tests' trainer programs take to compile under XLA flag sets (the measure
behind `FAST_COMPILE` in tests/conftest.py).

Each flag set runs in its own process (XLA reads its flags once), without the persistent
compilation cache, and trains the tiny stage-1 and stage-2 test configs two steps; the
sets alternate for `--repeats` rounds, so a busy machine slows them alike. Reported:
wall time of the two runs, and XLA backend compile time (programs over 0.3 s and the
rest) and tracing time, summed from `jax.monitoring` events.

  taskset -c 0 python tests/compile_flags.py [--repeats=2] [--stages=stage1,stage2]
"""

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"
SETS = {
    "O0 only": "",
    "+ no fusion emitters": "--xla_cpu_use_fusion_emitters=false",
    "FAST_COMPILE": None,  # Filled from tests/conftest.py below.
}


def child(stages: str) -> None:
  import jax
  totals = collections.defaultdict(float)

  def listen(name, secs, **_):
    if name.endswith("backend_compile_duration"):
      totals["compile_big" if secs > 0.3 else "compile_small"] += secs
    elif name.endswith("jaxpr_trace_duration"):
      totals["trace"] += secs

  jax.monitoring.register_event_duration_secs_listener(listen)
  from norface_jax.training import entry
  from tests.test_stage_guarantees import CONFIGS
  start = time.time()
  for name in stages.split(","):
    config = CONFIGS[name]()
    config.total_steps = 2
    entry.train(config, tempfile.mkdtemp())
  print(json.dumps({"wall": time.time() - start, **totals}))


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--repeats", type=int, default=2)
  p.add_argument("--stages", default="stage1,stage2")
  p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.child:
    return child(args.stages)
  sys.path.insert(0, ROOT)
  from tests.conftest import FAST_COMPILE
  SETS["FAST_COMPILE"] = FAST_COMPILE.replace("--xla_backend_optimization_level=0", "").strip()
  runs = collections.defaultdict(list)
  for _ in range(args.repeats):
    for label, extra in SETS.items():
      env = dict(os.environ, XLA_FLAGS=f"{BASE} {extra}", JAX_PLATFORMS="cpu",
                 JAX_ENABLE_COMPILATION_CACHE="false", PYTHONPATH=ROOT)
      out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child",
                            f"--stages={args.stages}"], env=env, cwd=ROOT, check=True,
                           capture_output=True, text=True)
      runs[label].append(json.loads(out.stdout.strip().splitlines()[-1]))
  print(f"{'flags':24s} {'wall s':>14s} {'compile >0.3 s':>16s} {'trace s':>12s}")
  for label, rows in runs.items():
    col = lambda k: "/".join(f"{r.get(k, 0):.1f}" for r in rows)  # noqa: E731
    print(f"{label:24s} {col('wall'):>14s} {col('compile_big'):>16s} {col('trace'):>12s}")


if __name__ == "__main__":
  main()
