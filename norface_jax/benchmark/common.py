"""Timing, FLOPs, peak and MFU helpers shared by the per-model benchmarks.

Images/s are medians over timed windows after warm-up; every window ends with a
device sync (`block_until_ready` / the PyTorch step returning a Python float), so
asynchronous dispatch is not mistaken for speed.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass
class Row:
  name: str
  images_per_sec: float
  note: str = ""


def median_rate(step: Callable[[], None], sync: Callable[[], None], *, batch: int,
                warmup: int = 2, windows: int = 5, steps_per_window: int = 2) -> float:
  """Median images/s of `step` over `windows` windows of `steps_per_window` steps."""
  for _ in range(warmup):
    step()
  sync()
  rates = []
  for _ in range(windows):
    t0 = time.perf_counter()
    for _ in range(steps_per_window):
      step()
    sync()
    rates.append(batch * steps_per_window / (time.perf_counter() - t0))
  return statistics.median(rates)


def compiled_flops(compiled) -> float:
  """FLOPs of one call of a compiled XLA executable (XLA's cost analysis), or NaN."""
  try:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
      cost = cost[0]
    return float(cost.get("flops", float("nan")))
  except Exception:  # Some backends do not implement cost analysis.
    return float("nan")


def matmul_peak(dtype: str = "float32", n: int | None = None, repeats: int = 5) -> float:
  """Measured FLOP/s of a large square matmul on the default device (the MFU peak)."""
  platform = jax.devices()[0].platform
  n = n or (8192 if platform != "cpu" else 1024)
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    f(a).block_until_ready()
    times.append(time.perf_counter() - t0)
  return 2.0 * n ** 3 / min(times)


def format_table(rows: list[Row], reference: str) -> str:
  """Markdown table with each row's ratio to the `reference` row."""
  ref = next((r.images_per_sec for r in rows if r.name == reference), float("nan"))
  lines = ["| step | images/s | vs " + reference + " | note |", "| --- | --- | --- | --- |"]
  for r in rows:
    ratio = r.images_per_sec / ref if ref and np.isfinite(r.images_per_sec) else float("nan")
    rate = f"{r.images_per_sec:.1f}" if np.isfinite(r.images_per_sec) else "n/a"
    lines.append(f"| {r.name} | {rate} | {ratio:.2f}x | {r.note} |")
  return "\n".join(lines)
