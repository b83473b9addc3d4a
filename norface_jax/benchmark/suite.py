"""The accelerator check: every model's step, the input pipeline and the largest batch in
one run and one markdown table (`launch/accelerator_check.sh`).

Parts, in this order, each skipped (and said so) once the time budget is spent:

1. stage 2 (F_cla) at B/16, 224 px, bfloat16; 2. stage 1 (F_nor: G + D with the
perception losses) at B/16, 256 px; 3. MAE pre-training at B/16, 224 px; 4. DeepFN
(paper-size autoencoder and LeNet-5); each beside its PyTorch twin, eager and
`torch.compile`, at the same settings, where PyTorch runs on the same kind of device;
5. the Grain input pipeline at 1, 4 and 8 workers against the stage-2 step;
6. the largest stage-2 batch whose compiled program fits the device's memory (XLA's
memory analysis of the compiled step against the device's byte limit; nothing runs).

MFU is the analytic FLOPs of the step (every matmul and convolution of its jaxpr,
forward and backward: `common.matmul_flops`) per second, against the chip's dense
bf16 data-sheet peak (`common.SPEC_BF16_PEAK`) and against a bf16 matmul measured on the
device. `--tiny` runs every part at test sizes (mu/8 ViTs, 32 px, batch 2, no
torch.compile, the pipeline in-process) on a CPU in a few minutes.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable

import jax

from norface_jax.benchmark import common, run

FULL_PARTS = (
    ("stage 2 (F_cla)", "cla", dict(variant="B/16", image_size=224, batch=128)),
    ("stage 1 (F_nor)", "nor", dict(variant="B/16", image_size=256, batch=16)),
    ("MAE", "mae", dict(variant="B/16", image_size=224, batch=256)),
    ("DeepFN", "deepfn", dict(variant="paper", image_size=128, batch=64)),
)
TINY_PARTS = (
    ("stage 2 (F_cla)", "cla", dict(variant="mu/8", image_size=32, batch=2)),
    ("stage 1 (F_nor)", "nor", dict(variant="mu/8", image_size=32, batch=2, perception="tiny")),
    ("MAE", "mae", dict(variant="mu/8", image_size=32, batch=2)),
    ("DeepFN", "deepfn", dict(variant="4,4,8,8", image_size=32, batch=2)),
)


@dataclasses.dataclass
class Settings:
  tiny: bool = False
  budget_s: float = 480.0
  dtype: str = "bfloat16"
  torch_side: bool = True
  torch_compile: bool = True
  workers: tuple[int, ...] = (1, 4, 8)
  max_batch: int = 4096

  @classmethod
  def make(cls, tiny: bool, **overrides) -> "Settings":
    base = cls(tiny=True, budget_s=600.0, dtype="float32", torch_compile=False, workers=(0,),
               max_batch=4) if tiny else cls()
    return dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})


def _options(settings: Settings, spec: dict[str, Any]) -> common.Options:
  timing = dict(warmup=1, windows=1, steps_per_window=1) if settings.tiny else dict(
      warmup=2, windows=5, steps_per_window=2)
  return common.Options(dtype=settings.dtype, **timing, **spec)


def torch_device_note() -> str:
  """Why the PyTorch rows are skipped, or "" when they run on JAX's kind of device."""
  try:
    import torch
  except ImportError:
    return "torch is not installed"
  platform = jax.devices()[0].platform
  if platform == "cpu" or common.torch_device() == "cuda":
    return ""
  return (f"PyTorch {torch.__version__} has no {platform.upper()} here (the project pins the "
          "CPU wheel): install a CUDA build of torch 2.13.0 for the twin rows")


def largest_batch(opts: common.Options, max_batch: int,
                  deadline: float = math.inf) -> tuple[list[tuple[int, float]], float]:
  """[(batch, bytes the compiled stage-2 step needs)] doubling from `opts.batch` while it
  fits the device's `bytes_limit` (all the tried sizes when no limit is reported) and
  `time.perf_counter()` is before `deadline`, and the limit (NaN if none)."""
  from norface_jax.benchmark import cla
  stats = jax.devices()[0].memory_stats() or {}
  limit = float(stats.get("bytes_limit", float("nan")))
  tried = []
  batch = opts.batch
  while batch <= max_batch and time.perf_counter() < deadline:
    config = cla.make_config(dataclasses.replace(opts, batch=batch))
    try:
      mem = cla.compile_abstract(config, batch).memory_analysis()
    except Exception as e:  # Out of memory at compile time.
      if "RESOURCE_EXHAUSTED" in str(e) or "memory" in str(e).lower():
        break
      raise
    need = float(mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes
                 + mem.temp_size_in_bytes) if mem is not None else float("nan")
    if math.isfinite(limit) and need > limit:
      break
    tried.append((batch, need))
    batch *= 2
  return tried, limit


def _bytes(n: float) -> str:
  if not math.isfinite(n):
    return "n/a"
  return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _fmt(x: float, spec: str = ".1f", suffix: str = "") -> str:
  return f"{x:{spec}}{suffix}" if math.isfinite(x) else "n/a"


def summary_table(results: list[tuple[str, run.Result]]) -> str:
  lines = ["| part | step | batch | JAX images/s | vs torch eager | vs torch.compile | "
           "MFU (chip spec) | MFU (measured matmul) | first step (s) |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
  for part, res in results:
    for row in (r for r in res.rows if r.impl == "jax"):
      ref = {impl: next((r.images_per_sec for r in res.rows
                         if r.impl == impl and r.step == row.step), float("nan"))
             for impl in ("torch eager", "torch.compile")}
      ratio = lambda impl: _fmt(row.images_per_sec / ref[impl], ".2f", "x")  # noqa: E731
      use = lambda peak: _fmt(  # noqa: E731
          100 * common.mfu(row.model_flops, row.images_per_sec, row.batch, peak), ".1f", "%")
      lines.append(f"| {part} | {row.step} | {row.batch} | {_fmt(row.images_per_sec)} | "
                   f"{ratio('torch eager')} | {ratio('torch.compile')} | {use(res.spec)} | "
                   f"{use(res.peak)} | {_fmt(row.compile_s)} |")
  return "\n".join(lines)


def run_suite(settings: Settings, log: Callable[[str], None] = print) -> str:
  """Runs every part within `settings.budget_s`; returns the markdown report."""
  t_start = time.perf_counter()
  left = lambda: settings.budget_s - (time.perf_counter() - t_start)  # noqa: E731
  dev = jax.devices()[0]
  spec, spec_name = common.spec_peak()
  peak = common.matmul_peak(settings.dtype)
  note = torch_device_note() if settings.torch_side else "not asked for"
  torch_side = settings.torch_side and not note
  parts = TINY_PARTS if settings.tiny else FULL_PARTS
  results, skipped = [], []
  for part, model, spec_kw in parts:
    if left() <= 0:
      skipped.append(f"{part}: time budget spent")
      continue
    log(f"[accelerator check] {part} ({left():.0f} s of the budget left)")
    opts = _options(settings, spec_kw)
    results.append((part, run.measure(model, opts, torch_side, settings.torch_compile, peak=peak)))
  out = [f"# Accelerator check{' (--tiny)' if settings.tiny else ''}", "",
         f"device: {dev.platform}:{dev.device_kind} x{jax.device_count()}; jax {jax.__version__}; "
         f"compute dtype {settings.dtype}; chip bf16 spec peak: "
         f"{_fmt(spec / 1e12, '.0f', ' TFLOP/s')} ({spec_name}); measured {settings.dtype} "
         f"matmul: {peak / 1e12:.3f} TFLOP/s; PyTorch twins: "
         f"{'eager' + (' and torch.compile' if settings.torch_compile else '') if torch_side else 'skipped (' + note + ')'}",
         "", summary_table(results), ""]
  cla = next((res for part, res in results if res.model == "cla"), None)
  if cla is not None and left() > 0:
    log(f"[accelerator check] input pipeline at {settings.workers} workers")
    from norface_jax.data.synthfacs.source import SynthFACSSource
    batch = cla.train.batch
    source = SynthFACSSource("affectnet", "train", size=run.synthfacs_size(TINY_PARTS[0][2][
        "image_size"] if settings.tiny else FULL_PARTS[0][2]["image_size"]),
        num_identities=max(16, batch // 2), num_classes=7, normalized_target=0)
    out += ["| Grain workers | images/s | x the stage-2 train step |", "| --- | --- | --- |"]
    for w in settings.workers:
      rate = run.input_pipeline_rate(source, batch, ("image", "image_norm", "emotion"),
                                     batches=4 if settings.tiny else 20, workers=w)
      out.append(f"| {w} | {rate:.0f} | {rate / cla.train.images_per_sec:.1f}x |")
    out.append("")
  else:
    skipped.append("input pipeline: " + ("no stage-2 step" if cla is None else "time budget spent"))
  if left() > 0:
    log("[accelerator check] largest stage-2 batch")
    opts = _options(settings, parts[0][2])
    tried, limit = largest_batch(opts, settings.max_batch,
                                 deadline=t_start + settings.budget_s)
    sizes = ", ".join(f"batch {b}: {_bytes(n)}" for b, n in tried)
    if math.isfinite(limit):
      verdict = (f"largest batch that fits (of those tried in the budget): {tried[-1][0]}"
                 if tried else f"batch {opts.batch} does not fit")
      out.append(f"- stage 2, {opts.variant} {opts.image_size} px {opts.dtype}: {verdict} "
                 f"(device limit {_bytes(limit)}; the compiled step needs {sizes})")
    else:
      out.append(f"- stage 2, {opts.variant} {opts.image_size} px {opts.dtype}: this device "
                 f"reports no memory limit; the compiled step needs {sizes}")
  else:
    skipped.append("largest batch: time budget spent")
  out += [f"- skipped: {s}" for s in skipped]
  out.append(f"- wall time: {time.perf_counter() - t_start:.0f} s "
             f"(budget {settings.budget_s:.0f} s)")
  out += ["", "## Per model", ""]
  for part, res in results:
    out += [f"### {part}", "", run.report(res, "torch eager" if torch_side else "jax"), ""]
  return "\n".join(out)
