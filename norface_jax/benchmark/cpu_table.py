"""The CPU table of docs/benchmarks.md: every model's JAX steps beside PyTorch eager, at
one and at two threads, each side pinned alike.

  python -m norface_jax.benchmark.cpu_table --out=cpu_table.md

Each (model, threads) pair runs `launch/benchmark.py --notorch_compile` in a fresh
process: one thread on core 1 (`taskset -c 1`, OMP_NUM_THREADS=1, XLA:CPU without its
multi-threaded Eigen pool), two threads on cores 0-1 (OMP_NUM_THREADS=2, XLA's default
threading). Run it on an otherwise idle machine.
"""

from __future__ import annotations

import os
import subprocess
import sys

from absl import app, flags

from norface_jax.benchmark import cpu_flags

ROOT = cpu_flags.ROOT
_MODELS = flags.DEFINE_list("models", ["cla", "nor", "mae", "deepfn"], "Benchmark models.")
_THREADS = flags.DEFINE_list("threads", ["1", "2"], "Thread counts.")
_WINDOWS = flags.DEFINE_integer("windows", 3, "Timed windows (median).")
_OUT = flags.DEFINE_string("out", "", "Also write the table here.")

CORES = {1: "1", 2: "0,1"}


def measure(model: str, threads: int, windows: int) -> dict[str, float]:
  """{row name: images/s} of one `launch/benchmark.py` run."""
  env = dict(os.environ, XLA_FLAGS=cpu_flags.base_flags(threads), JAX_PLATFORMS="cpu",
             OMP_NUM_THREADS=str(threads),
             PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  cmd = ["taskset", "-c", CORES[threads], sys.executable,
         os.path.join(ROOT, "launch", "benchmark.py"), f"--model={model}",
         *cpu_flags.SIZES[model], "--notorch_compile", f"--windows={windows}"]
  out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
  if out.returncode:
    raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
  rows = {}
  for line in out.stdout.splitlines():
    cells = [c.strip() for c in line.split("|")[1:-1]]
    if len(cells) >= 2 and cells[0].startswith(("jax ", "torch eager ")):
      rows[cells[0]] = float(cells[1])
  return rows


def main(argv):
  del argv
  lines = ["| model (size) | step | threads | JAX images/s | PyTorch eager images/s | JAX / eager |",
           "| --- | --- | --- | --- | --- | --- |"]
  print("\n".join(lines), flush=True)
  for model in _MODELS.value:
    for threads in (int(t) for t in _THREADS.value):
      rows = measure(model, threads, _WINDOWS.value)
      size = " ".join(cpu_flags.SIZES[model]) or "defaults"
      for name in [n for n in rows if n.startswith("jax ")]:
        step = name[len("jax "):]
        jax_rate, torch_rate = rows[name], rows.get(f"torch eager {step}", float("nan"))
        line = (f"| {model} ({size}) | {step} | {threads} | {jax_rate:.1f} | {torch_rate:.1f} | "
                f"{jax_rate / torch_rate:.2f}x |")
        lines.append(line)
        print(line, flush=True)
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
  app.run(main)
