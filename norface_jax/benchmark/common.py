"""Timing, FLOPs, peak and MFU helpers shared by the per-model benchmarks.

Images/s are medians over timed windows after warm-up; every window ends with a
device sync (`block_until_ready` / the PyTorch step returning a Python float), so
asynchronous dispatch is not mistaken for speed.

A model module (`cla`, `nor`, `mae`, `deepfn`) provides `DEFAULTS` (variant, image
size, batch when the command line names none), `make_config(opts)`,
`describe(config, opts)` (the header's sizes), `jax_rows(config, opts)`,
`torch_calls(config, opts)` (one fresh set of PyTorch callables per mode, see
`TorchCall`) and `input_rate(config, opts)`; `run.run` does the rest with the
helpers here (`time_jax_train`, `time_jax_call`, `torch_rows`, `format_table`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import statistics
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

IMPLS = ("jax", "torch eager", "torch.compile")


@dataclasses.dataclass
class Options:
  """The command line of `launch/benchmark.py`, as the model modules read it."""
  variant: str
  batch: int
  image_size: int
  dtype: str = "float32"
  dispatch: str = "dense"
  scan: bool = False
  remat: bool = False
  perception: str = "synthfacs"
  warmup: int = 2
  windows: int = 5
  steps_per_window: int = 2

  def timing(self) -> dict[str, int]:
    return {"warmup": self.warmup, "windows": self.windows,
            "steps_per_window": self.steps_per_window}


@dataclasses.dataclass
class Row:
  """One timed step: `name` is "<impl> <step>", impl one of `IMPLS` ("jax train",
  "torch eager AE train"); JAX rows also carry the step's FLOPs per call two ways
  (`model_flops`: the matmuls and convolutions of its jaxpr, `matmul_flops`; `flops`:
  XLA's cost analysis of the compiled program, elementwise work included), its batch
  and the time to the first step (init + compile)."""
  name: str
  images_per_sec: float
  note: str = ""
  flops: float = float("nan")
  batch: int = 0
  compile_s: float = float("nan")
  model_flops: float = float("nan")

  @property
  def impl(self) -> str:
    return next((i for i in IMPLS if self.name.startswith(i + " ")), "")

  @property
  def step(self) -> str:
    return self.name[len(self.impl):].strip() if self.impl else self.name


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


def time_jax_train(compiled, state: Any, args: Sequence[Any], *, batch: int,
                   **timing) -> tuple[float, Any]:
  """images/s of a compiled `(state, *args) -> (state, metrics)` step whose state is
  donated (each call consumes the previous state); returns the rate and the last state."""
  holder = {"state": state}

  def step():
    holder["state"], _ = compiled(holder["state"], *args)

  sync = lambda: jax.block_until_ready(holder["state"])  # noqa: E731
  rate = median_rate(step, sync, batch=batch, **timing)
  if PROFILE["steps"]:
    PROFILE["out"].append(profile_ops(compiled, step, sync, PROFILE["steps"]))
  return rate, holder["state"]


# `benchmark/profile.py` sets "steps" > 0: every timed JAX train step is then also run
# that many times under the profiler and its per-op times are appended to "out".
PROFILE: dict[str, Any] = {"steps": 0, "out": []}


def profile_ops(compiled, step: Callable[[], None], sync: Callable[[], None],
                steps: int) -> dict[str, Any]:
  """{"ops": {HLO instruction: seconds per step}, "hlo": the program's text} from a
  profiler trace of `steps` calls of `step` (XLA:CPU records one event per thunk)."""
  import collections
  import glob
  import gzip
  import json
  import tempfile
  with tempfile.TemporaryDirectory() as d:
    jax.profiler.start_trace(d)
    for _ in range(steps):
      step()
    sync()
    jax.profiler.stop_trace()
    path = sorted(glob.glob(os.path.join(d, "**", "*.trace.json.gz"), recursive=True))[-1]
    with gzip.open(path) as f:
      events = json.load(f)["traceEvents"]
  hlo = compiled.as_text()
  names = set(re.findall(r"^\s*(?:ROOT )?%?([\w.\-]+) = ", hlo, re.M))
  ops = collections.Counter()
  for e in events:
    if e.get("ph") == "X" and e.get("name") in names:
      ops[e["name"]] += e.get("dur", 0.0) * 1e-6 / steps
  return {"ops": dict(ops), "hlo": hlo}


def time_jax_call(compiled, args: Sequence[Any], *, batch: int, **timing) -> float:
  """images/s of a compiled side-effect-free call (inference)."""
  out = {}

  def call():
    out["y"] = compiled(*args)

  return median_rate(call, lambda: jax.block_until_ready(out["y"]), batch=batch, **timing)


def jax_row(name: str, rate: float, compiled, batch: int, compile_s: float = float("nan"),
            note: str = "", model_flops: float = float("nan")) -> Row:
  return Row(name, rate, note, compiled_flops(compiled), batch, compile_s, model_flops)


def compile_traced(jitted, *args) -> tuple[Any, float]:
  """(the compiled executable of `jitted(*args)`, its analytic FLOPs per call)."""
  traced = jitted.trace(*args)
  return traced.lower().compile(), matmul_flops(traced.jaxpr)


def _dot_flops(eqn) -> float:
  lhs, rhs = (v.aval.shape for v in eqn.invars[:2])
  (_, rhs_contract), (_, rhs_batch) = eqn.params["dimension_numbers"]
  free = [d for i, d in enumerate(rhs) if i not in rhs_contract and i not in rhs_batch]
  return 2.0 * math.prod(lhs) * math.prod(free)


def _conv_flops(eqn) -> float:
  rhs = eqn.invars[1].aval.shape
  out = eqn.outvars[0].aval.shape
  rhs_spec = eqn.params["dimension_numbers"].rhs_spec  # (out feature, in feature, spatial...)
  return 2.0 * math.prod(out) * rhs[rhs_spec[1]] * math.prod(rhs[d] for d in rhs_spec[2:])


def matmul_flops(jaxpr) -> float:
  """FLOPs of every matmul (`dot_general`) and convolution in a (closed) jaxpr: 2 x the
  multiply-adds, sub-jaxprs included (a `scan` body times its length). Traced from a
  train step it holds the forward and the backward pass as written, with no remat
  recomputation beyond what the program spells out; the analytic "model FLOPs" of MFU.
  Elementwise work is not counted. A transposed convolution (lhs dilation) is counted
  with the zeros it multiplies."""
  jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
  total = 0.0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      total += _dot_flops(eqn)
    elif name == "conv_general_dilated":
      total += _conv_flops(eqn)
    times = float(eqn.params.get("length", 1)) if name == "scan" else 1.0
    subs = [v for v in eqn.params.values() if hasattr(v, "eqns") or hasattr(v, "jaxpr")]
    subs += [b for v in eqn.params.values() if isinstance(v, (tuple, list))
             for b in v if hasattr(b, "eqns") or hasattr(b, "jaxpr")]
    if name == "cond":  # One branch runs.
      total += max((matmul_flops(b) for b in subs), default=0.0)
    else:
      total += times * sum(matmul_flops(b) for b in subs)
  return total


@dataclasses.dataclass
class TorchCall:
  """One PyTorch step to time: `fn()` runs it once (a full train step, optimizer
  included, or one inference call); `modules` are put in train/eval mode first."""
  step: str
  fn: Callable[[], Any]
  batch: int
  modules: Sequence[Any] = ()
  training: bool = True
  note: str = ""


def torch_threads() -> int:
  """PyTorch intra-op threads: OMP_NUM_THREADS if set, else the CPUs this process may use."""
  if os.environ.get("OMP_NUM_THREADS", "").isdigit():
    return max(1, int(os.environ["OMP_NUM_THREADS"]))
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # Not Linux.
    return os.cpu_count() or 1


def torch_device() -> str:
  """Where the PyTorch twins run: "cuda" when JAX runs on a GPU and this torch sees one,
  else "cpu"."""
  import torch
  return "cuda" if jax.devices()[0].platform == "gpu" and torch.cuda.is_available() else "cpu"


def torch_rows(build: Callable[[], list[TorchCall]], compile_modes: Sequence[bool],
               dtype: str = "float32", **timing) -> list[Row]:
  """Rows of every `TorchCall` of `build()` in eager mode and/or under `torch.compile`.

  `build` is called once per mode (fresh modules and optimizers) with `torch_device()` as
  the default device, so its modules and tensors live there; a CUDA window ends with
  `torch.cuda.synchronize()`. bfloat16 runs under `torch.autocast(bfloat16)` (float32
  parameters, as the JAX compute dtype); inference under `torch.no_grad()`. A mode whose
  compilation fails gives NaN rows with the error.
  """
  import torch
  device = torch_device()
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
  rows = []
  for compiled in compile_modes:
    impl = "torch.compile" if compiled else "torch eager"
    with torch.device(device):
      calls = build()
    failed = ""
    for call in calls:
      name = f"{impl} {call.step}"
      if failed:
        rows.append(Row(name, float("nan"), "skipped"))
        continue
      for m in call.modules:
        m.train(call.training)
      fn = torch.compile(call.fn) if compiled else call.fn

      def run(fn=fn, training=call.training):
        grad = contextlib.nullcontext() if training else torch.no_grad()
        cast = (torch.autocast(device, dtype=torch.bfloat16) if dtype == "bfloat16"
                else contextlib.nullcontext())
        with grad, cast, torch.device(device):
          out = fn()
        return out

      try:
        run()  # Compiles (torch.compile) or warms up; errors surface here.
      except Exception as e:  # Inductor needs a working C++ toolchain on CPU.
        if not compiled:
          raise
        failed = f"failed: {type(e).__name__}"
        rows.append(Row(name, float("nan"), failed))
        continue
      rows.append(Row(name, median_rate(run, sync, batch=call.batch, **timing), call.note))
  return rows


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


def format_table(rows: list[Row], reference: str = "torch eager") -> str:
  """Markdown table; each row's ratio is to the `reference` implementation's row of the
  same step (to the JAX row where that one is missing or failed)."""
  def ref_rate(step: str) -> tuple[float, str]:
    for impl in (reference, "jax"):
      r = next((r for r in rows if r.impl == impl and r.step == step), None)
      if r is not None and np.isfinite(r.images_per_sec) and r.images_per_sec > 0:
        return r.images_per_sec, impl
    return float("nan"), reference

  lines = [f"| step | images/s | vs {reference} (same step) | note |", "| --- | --- | --- | --- |"]
  for r in rows:
    ref, impl = ref_rate(r.step)
    ratio = r.images_per_sec / ref if np.isfinite(ref) and np.isfinite(r.images_per_sec) else None
    rate = "n/a" if not np.isfinite(r.images_per_sec) else (
        f"{r.images_per_sec:.1f}" if r.images_per_sec >= 10 else f"{r.images_per_sec:.3f}")
    ratio_s = "n/a" if ratio is None else f"{ratio:.2f}x"
    if ratio is not None and impl != reference:
      ratio_s += " (vs jax)"
    lines.append(f"| {r.name} | {rate} | {ratio_s} | {r.note} |")
  return "\n".join(lines)


# Dense bfloat16 peak FLOP/s per chip from the vendors' data sheets (no sparsity), by a
# substring of `jax.devices()[0].device_kind`; the first match wins.
SPEC_BF16_PEAK = (("H200", 989e12), ("H100", 989e12), ("A100", 312e12), ("L4", 121e12),
                  ("TPU v6", 918e12), ("TPU v5p", 459e12), ("TPU v5", 197e12),
                  ("TPU v4", 275e12))


def spec_peak(device_kind: str | None = None) -> tuple[float, str]:
  """(the chip's dense bf16 peak FLOP/s, its name), or (NaN, kind) when not in the table."""
  kind = jax.devices()[0].device_kind if device_kind is None else device_kind
  for name, peak in SPEC_BF16_PEAK:
    if name.lower() in kind.lower():
      return peak, name
  return float("nan"), kind


def mfu(flops_per_step: float, images_per_sec: float, batch: int, peak: float) -> float:
  """Model FLOPs utilisation: FLOPs per step x steps per second / peak FLOP/s."""
  return flops_per_step * images_per_sec / max(batch, 1) / peak


def flops_lines(rows: list[Row], peak: float, spec: float = float("nan")) -> list[str]:
  """`- JAX <step>: GFLOP/step, MFU, time to first step` for every JAX row with FLOPs:
  analytic FLOPs (`model_flops`) against the measured matmul `peak` and the chip's `spec`
  peak where known; XLA's count beside them as hardware FLOPs."""
  out = []
  for r in rows:
    if r.impl != "jax" or not (math.isfinite(r.flops) or math.isfinite(r.model_flops)):
      continue
    parts = []
    if math.isfinite(r.model_flops):
      on_spec = (f", {100 * mfu(r.model_flops, r.images_per_sec, r.batch, spec):.1f}% of the "
                 "chip's bf16 spec" if math.isfinite(spec) else "")
      parts.append(f"{r.model_flops / 1e9:.3f} model GFLOP/step (matmuls + convs), MFU "
                   f"{100 * mfu(r.model_flops, r.images_per_sec, r.batch, peak):.1f}% of the "
                   f"measured matmul peak{on_spec}")
    if math.isfinite(r.flops):
      parts.append(f"{r.flops / 1e9:.3f} GFLOP/step by XLA's cost analysis "
                   f"({100 * mfu(r.flops, r.images_per_sec, r.batch, peak):.1f}% hardware "
                   "utilisation)")
    first = (f"; time to first step (init + compile): {r.compile_s:.1f} s"
             if math.isfinite(r.compile_s) else "")
    out.append(f"- JAX {r.step} ({r.batch} images): " + "; ".join(parts) + first)
  return out
