"""XLA:CPU flag settings against the default, on the JAX train steps of `launch/benchmark.py`.

  taskset -c 1 python -m norface_jax.benchmark.cpu_flags --models=cla,nor --threads=1

Each setting runs `launch/benchmark.py --model=M --notorch` in a fresh process (XLA reads
its flags once, at start) with `XLA_FLAGS` = the base flags + the setting (and without
the project's own defaults, `norface_jax.xla_cpu`, so "default" is XLA's), and the
table gives each setting's JAX train images/s and its ratio to the default's, the rows
of one model measured one after another in one run. Pin the command to idle cores: the
subprocesses inherit the pinning.
"""

from __future__ import annotations

import os
import subprocess
import sys

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# name -> extra XLA flags. The YNNPACK fusion types of this jaxlib (XLA's
# LibraryFusionType): dot, eltwise, individual_convolution, individual_dot, reduce.
SETTINGS = {
    "default": "",
    "fast math": "--xla_cpu_enable_fast_math=true",
    "ynn -individual_convolution": "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",
    "ynn -individual_dot": "--xla_cpu_experimental_ynn_fusion_type=-individual_dot",
    "ynn +dot": "--xla_cpu_experimental_ynn_fusion_type=+dot",
    "ynn +eltwise": "--xla_cpu_experimental_ynn_fusion_type=+eltwise",
    "ynn +reduce": "--xla_cpu_experimental_ynn_fusion_type=+reduce",
    "xnn greedy graph fusion":
        "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY",
}
SIZES = {"cla": ["--variant=S/16", "--image_size=224", "--batch=8"],
         "nor": ["--variant=mu/8", "--image_size=64", "--batch=16"],
         "mae": ["--variant=S/16", "--image_size=224", "--batch=8"],
         "deepfn": []}



def base_flags(threads: int) -> str:
  """One CPU device; one thread: XLA:CPU without its multi-threaded Eigen pool."""
  single = " --xla_cpu_multi_thread_eigen=false" if threads == 1 else ""
  return "--xla_force_host_platform_device_count=1" + single


def train_rate(model: str, extra: str, threads: int, windows: int) -> float:
  env = dict(os.environ, XLA_FLAGS=f"{base_flags(threads)} {extra}".strip(),
             NORFACE_XLA_CPU_DEFAULTS="0",  # "default" is XLA's, not norface_jax.xla_cpu's.
             JAX_PLATFORMS="cpu", OMP_NUM_THREADS=str(threads),
             PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  cmd = [sys.executable, os.path.join(ROOT, "launch", "benchmark.py"), f"--model={model}",
         *SIZES[model], "--notorch", "--warmup=1", f"--windows={windows}"]
  out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
  if out.returncode:
    return float("nan")
  step = "AE train" if model == "deepfn" else "train"
  line = next(l for l in out.stdout.splitlines() if l.startswith(f"| jax {step} |"))
  return float(line.split("|")[2])


def main(argv):
  del argv
  print(f"XLA_FLAGS base: {base_flags(_THREADS.value)}; OMP_NUM_THREADS={_THREADS.value}; "
        f"CPUs allowed: {sorted(os.sched_getaffinity(0))}\n")
  print("| model | setting | JAX train images/s | vs default |")
  print("| --- | --- | --- | --- |")
  for model in _MODELS.value:
    base = None
    for name in _SETTINGS.value:
      rate = train_rate(model, SETTINGS[name], _THREADS.value, _WINDOWS.value)
      base = rate if name == "default" else base
      ratio = f"{rate / base:.2f}x" if base and rate == rate else "n/a"
      print(f"| {model} | {name} (`{SETTINGS[name] or 'none'}`) | {rate:.2f} | {ratio} |",
            flush=True)


if __name__ == "__main__":
  # Defined here, not at import: benchmark/cpu_table.py imports this module's helpers.
  _MODELS = flags.DEFINE_list("models", ["cla", "nor"], "Which benchmark models.")
  _SETTINGS = flags.DEFINE_list("settings", list(SETTINGS), "Which settings (names above).")
  _THREADS = flags.DEFINE_integer("threads", 1, "Intra-op threads (XLA:CPU's Eigen pool).")
  _WINDOWS = flags.DEFINE_integer("windows", 3, "Timed windows per setting.")
  app.run(main)
