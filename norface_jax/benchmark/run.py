"""`launch/benchmark.py`: one table of JAX vs PyTorch-twin images/s, FLOPs, MFU."""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import numpy as np
from absl import logging

from norface_jax.benchmark import common


def input_pipeline_rate(image_size: int, batch: int, batches: int = 20, workers: int = 0) -> float:
  """images/s of the Grain loader over cached SynthFACS items (host side only)."""
  from norface_jax.data import pipeline
  from norface_jax.data.synthfacs.source import SynthFACSSource
  source = SynthFACSSource("affectnet", "train", size=image_size, num_identities=max(16, batch // 2),
                           num_classes=7, normalized_target=0)
  loader = pipeline.train_loader(source, batch_size=batch, seed=0, worker_count=workers,
                                 keys=("image", "image_norm", "emotion"))
  it = iter(loader)
  next(it)
  t0 = time.perf_counter()
  for _ in range(batches):
    next(it)
  return batch * batches / (time.perf_counter() - t0)


def run(model: str, variant: str, batch: int, image_size: int, dtype: str, dispatch: str,
        torch_side: bool, torch_compile: bool, scan: bool = False, remat: bool = False,
        compile_only: bool = False) -> str:
  if model != "cla":
    raise ValueError(f"--model={model!r}: this version benchmarks 'cla' (stage 2); the stage-1, "
                     "MAE and DeepFN steps are not wired into the benchmark yet")
  from norface_jax.benchmark import cla
  config = cla.make_config(variant, image_size, batch, dtype, dispatch, scan, remat)
  if compile_only:
    secs = cla.compile_seconds(config, batch)
    return (f"model={model} variant={variant} batch={batch} image={image_size} dtype={dtype} "
            f"scan={scan} remat={remat}: train step compiled in {secs:.1f} s "
            f"(abstract init + lower + XLA compile)")
  rows, stats = cla.jax_rows(config, batch)
  if torch_side:
    import torch
    torch.set_num_threads(os.cpu_count() or 1)
    rows += cla.torch_rows(config, batch, (False, True) if torch_compile else (False,))
  peak = common.matmul_peak(dtype)
  train_rate = next(r.images_per_sec for r in rows if r.name == "jax train")
  step_time = batch / train_rate
  mfu = stats["train_flops"] / step_time / peak
  pipe = input_pipeline_rate(image_size, batch)
  dev = jax.devices()[0]
  lines = [
      f"model={model} variant={variant} batch={batch} image={image_size} dtype={dtype} "
      f"dispatch={dispatch} device={dev.platform}:{dev.device_kind} x{jax.device_count()}",
      "",
      common.format_table(rows, "torch eager train" if torch_side else "jax train"),
      "",
      f"- JAX train step: {stats['train_flops'] / 1e9:.2f} GFLOP/step (XLA cost analysis), "
      f"time to first step (init + compile): {stats['compile_s']:.1f} s",
      f"- measured {dtype} matmul peak: {peak / 1e12:.3f} TFLOP/s; train MFU {100 * mfu:.1f}%",
      f"- input pipeline (Grain, cached SynthFACS, 0 workers): {pipe:.0f} images/s = "
      f"{pipe / train_rate:.1f}x the train step",
  ]
  return "\n".join(lines)
