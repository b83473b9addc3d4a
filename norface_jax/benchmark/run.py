"""`launch/benchmark.py`: one table of JAX vs PyTorch-twin images/s, FLOPs, MFU."""

from __future__ import annotations

import dataclasses
import importlib
import time
from typing import Any, Sequence

import jax

from norface_jax.benchmark import common

MODELS = ("cla", "nor", "mae", "deepfn")


def model_module(model: str):
  if model not in MODELS:
    raise ValueError(f"--model={model!r}: expected one of {MODELS}")
  return importlib.import_module(f"norface_jax.benchmark.{model}")


def input_pipeline_rate(source: Any, batch: int, keys: Sequence[str], batches: int = 20,
                        workers: int = 0) -> float:
  """images/s of the Grain loader (`data_loader.train_loader`) over `source` (host side)."""
  from norface_jax.data import loader as data_loader
  loader = data_loader.train_loader(source, batch_size=batch, seed=0, worker_count=workers,
                                 keys=tuple(keys))
  it = iter(loader)
  next(it)
  t0 = time.perf_counter()
  for _ in range(batches):
    next(it)
  return batch * batches / (time.perf_counter() - t0)


def synthfacs_size(image_size: int) -> int:
  """SynthFACS renders 64..256 px; the pipeline rate of other sizes is measured at the nearest."""
  return min(max(image_size, 64), 256)


@dataclasses.dataclass
class Result:
  """One model's measurements: its rows, the peaks and the input pipeline's rate."""
  model: str
  header: str
  rows: list[common.Row]
  peak: float          # Measured matmul FLOP/s in the benchmark's dtype.
  spec: float          # The chip's dense bf16 data-sheet peak (NaN: unknown chip).
  pipe: float
  pipe_desc: str

  @property
  def train(self) -> common.Row:
    return next(r for r in self.rows if r.impl == "jax" and r.step.endswith("train"))


def measure(model: str, opts: common.Options, torch_side: bool = True,
            torch_compile: bool = True, peak: float | None = None) -> Result:
  """Times `model`'s JAX steps (and the PyTorch twin's) at `opts`; `peak`: a matmul peak
  measured already (else measured here)."""
  mod = model_module(model)
  config = mod.make_config(opts)
  rows = mod.jax_rows(config, opts)
  threads = ""
  if torch_side:
    import torch
    torch.set_num_threads(common.torch_threads())
    modes = (False, True) if torch_compile else (False,)
    rows += common.torch_rows(lambda: mod.torch_calls(config, opts), modes, opts.dtype,
                              **opts.timing())
    threads = f", torch threads {torch.get_num_threads()}"
  peak = common.matmul_peak(opts.dtype) if peak is None else peak
  pipe, pipe_desc = mod.input_rate(config, opts)
  dev = jax.devices()[0]
  header = (f"model={model} {mod.describe(config, opts)} dtype={opts.dtype} "
            f"device={dev.platform}:{dev.device_kind} x{jax.device_count()}{threads}")
  return Result(model, header, rows, peak, common.spec_peak()[0], pipe, pipe_desc)


def report(result: Result, reference: str = "torch eager") -> str:
  """The markdown of one model: header, table, FLOPs and MFU lines, peak, pipeline."""
  train = result.train
  lines = [
      result.header,
      "",
      common.format_table(result.rows, reference),
      "",
      *common.flops_lines(result.rows, result.peak, result.spec),
      f"- measured matmul peak: {result.peak / 1e12:.3f} TFLOP/s",
      f"- input pipeline ({result.pipe_desc}): {result.pipe:.0f} images/s = "
      f"{result.pipe / train.images_per_sec:.1f}x the JAX {train.step} step",
  ]
  return "\n".join(lines)


def run(model: str, opts: common.Options, torch_side: bool = True, torch_compile: bool = True,
        compile_only: bool = False) -> str:
  """`launch/benchmark.py`: one model's table (or its compile time)."""
  mod = model_module(model)
  if compile_only:
    if not hasattr(mod, "compile_seconds"):
      raise ValueError(f"--compile_only is implemented for --model=cla, not {model!r}")
    secs = mod.compile_seconds(mod.make_config(opts), opts.batch)
    return (f"model={model} variant={opts.variant} batch={opts.batch} image={opts.image_size} "
            f"dtype={opts.dtype} scan={opts.scan} remat={opts.remat}: train step compiled in "
            f"{secs:.1f} s (abstract init + lower + XLA compile)")
  result = measure(model, opts, torch_side, torch_compile)
  return report(result, "torch eager" if torch_side else "jax")
