"""`launch/benchmark.py`: one table of JAX vs PyTorch-twin images/s, FLOPs, MFU."""

from __future__ import annotations

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


def run(model: str, opts: common.Options, torch_side: bool = True, torch_compile: bool = True,
        compile_only: bool = False) -> str:
  mod = model_module(model)
  config = mod.make_config(opts)
  if compile_only:
    if not hasattr(mod, "compile_seconds"):
      raise ValueError(f"--compile_only is implemented for --model=cla, not {model!r}")
    secs = mod.compile_seconds(config, opts.batch)
    return (f"model={model} variant={opts.variant} batch={opts.batch} image={opts.image_size} "
            f"dtype={opts.dtype} scan={opts.scan} remat={opts.remat}: train step compiled in "
            f"{secs:.1f} s (abstract init + lower + XLA compile)")
  rows = mod.jax_rows(config, opts)
  if torch_side:
    import torch
    torch.set_num_threads(common.torch_threads())
    modes = (False, True) if torch_compile else (False,)
    rows += common.torch_rows(lambda: mod.torch_calls(config, opts), modes, opts.dtype,
                              **opts.timing())
  peak = common.matmul_peak(opts.dtype)
  pipe, pipe_desc = mod.input_rate(config, opts)
  train = next(r for r in rows if r.impl == "jax" and r.step.endswith("train"))
  dev = jax.devices()[0]
  threads = f", torch threads {torch.get_num_threads()}" if torch_side else ""
  lines = [
      f"model={model} {mod.describe(config, opts)} dtype={opts.dtype} "
      f"device={dev.platform}:{dev.device_kind} x{jax.device_count()}{threads}",
      "",
      common.format_table(rows, "torch eager" if torch_side else "jax"),
      "",
      *common.flops_lines(rows, peak),
      f"- measured {opts.dtype} matmul peak: {peak / 1e12:.3f} TFLOP/s",
      f"- input pipeline ({pipe_desc}): {pipe:.0f} images/s = "
      f"{pipe / train.images_per_sec:.1f}x the JAX {train.step} step",
  ]
  return "\n".join(lines)
