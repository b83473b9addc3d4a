"""Metric writers and progress reports without TensorFlow.

`clu.metric_writers` and `clu.periodic_actions` import TensorFlow (about 1.4 GB) just
to write event files. The writer here keeps CLU's `MetricWriter` method names
(`write_scalars`, `write_images`, `write_texts`, `write_hparams`, `flush`, `close`)
so code reads the same, and writes TensorBoard event files with `tensorboardX`, a
JSON-lines copy of every scalar (easy to read back in reports and tests) and a log
line. Only process 0 writes.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from typing import Any, Mapping

import jax
import numpy as np
from absl import logging


class MetricWriter:
  """CLU-style writer: TensorBoard events + `metrics.jsonl` + log lines."""

  def __init__(self, logdir: str, *, tensorboard: bool = True, just_logging: bool = False):
    self._active = jax.process_index() == 0 and not just_logging
    self._tb = None
    self._jsonl = None
    if self._active:
      os.makedirs(logdir, exist_ok=True)
      if tensorboard:
        from tensorboardX import SummaryWriter  # Imported lazily: optional at read time.
        self._tb = SummaryWriter(logdir=logdir, flush_secs=30)
      self._jsonl = open(os.path.join(logdir, "metrics.jsonl"), "a", buffering=1)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    values = {k: float(np.asarray(v)) for k, v in scalars.items()}
    logging.debug("[%d] %s", step, ", ".join(f"{k}={v:.6g}" for k, v in sorted(values.items())))
    if not self._active:
      return
    if self._tb is not None:  # NaN (e.g. the accuracy of a class absent from a split)
      for k, v in values.items():  # stays in metrics.jsonl; TensorBoard plots no NaN.
        if np.isfinite(v):
          self._tb.add_scalar(k, v, step)
    self._jsonl.write(json.dumps({"step": int(step), **values}) + "\n")

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    """`images`: name -> uint8 (H, W, C) or (N, H, W, C) arrays."""
    if not self._active or self._tb is None:
      return
    for k, v in images.items():
      v = np.asarray(v)
      if v.ndim == 3:
        self._tb.add_image(k, v, step, dataformats="HWC")
      else:
        self._tb.add_images(k, v, step, dataformats="NHWC")

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    for k, v in texts.items():
      logging.info("[%d] %s: %s", step, k, v)
      if self._active and self._tb is not None:
        self._tb.add_text(k, v, step)

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    if self._active and self._tb is not None:
      self._tb.add_text("hparams", "\n".join(f"    {k}: {v}" for k, v in sorted(hparams.items())), 0)

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()
    if self._jsonl is not None:
      self._jsonl.flush()

  def close(self) -> None:
    self.flush()
    if self._tb is not None:
      self._tb.close()
    if self._jsonl is not None:
      self._jsonl.close()


def read_jsonl(logdir: str) -> list[dict[str, float]]:
  """Reads back what `MetricWriter` wrote (for reports and tests)."""
  path = os.path.join(logdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


class ProgressReport:
  """One progress line per run: step, rate, loss and ETA.

  On a terminal the line is redrawn in place (stderr); elsewhere (a log file, a test)
  it is logged once per report. Rates leave out the time spent `paused()` (evaluation,
  checkpoints) and, on the first report, the step that compiled.
  """

  def __init__(self, *, num_train_steps: int, batch_size: int, writer: MetricWriter | None,
               every_steps: int = 50, name: str = "train", start_step: int = 0):
    self.num_train_steps = num_train_steps
    self.batch_size = batch_size
    self.writer = writer
    self.every_steps = max(1, every_steps)
    self.name = name
    self._last_step: int | None = None
    self._last_time = 0.0
    self._excluded = 0.0  # Seconds spent paused since the last report.
    self._start = start_step
    self._tty = jax.process_index() == 0 and sys.stderr.isatty()
    self._drawn = False

  def exclude(self, seconds: float) -> None:
    """Time not spent training (evaluation, checkpointing) that rates should ignore."""
    self._excluded += seconds

  @contextlib.contextmanager
  def paused(self):
    t0 = time.perf_counter()
    try:
      yield
    finally:
      self.exclude(time.perf_counter() - t0)

  def __call__(self, step: int, scalars: Mapping[str, float] | None = None) -> dict[str, float] | None:
    now = time.perf_counter()
    if self._last_step is None:  # The first call: its step compiled; rates start here.
      self._last_step, self._last_time, self._excluded = step, now, 0.0
      self._draw(step, None, scalars)
      return None
    if step - self._last_step < self.every_steps and step != self.num_train_steps:
      return None
    elapsed = max(now - self._last_time - self._excluded, 1e-9)
    steps_per_sec = (step - self._last_step) / elapsed
    stats = {"steps_per_sec": steps_per_sec, "images_per_sec": steps_per_sec * self.batch_size}
    self._draw(step, stats, scalars)
    if self.writer is not None:
      self.writer.write_scalars(step, stats)
    self._last_step, self._last_time, self._excluded = step, now, 0.0
    return stats

  def _draw(self, step: int, stats: Mapping[str, float] | None,
            scalars: Mapping[str, float] | None) -> None:
    n = self.num_train_steps
    width = 20
    filled = int(width * step / max(n, 1))
    parts = [f"{self.name} [{'#' * filled}{'.' * (width - filled)}] {step}/{n}"]
    if scalars and "training_loss" in scalars:
      parts.append(f"loss {scalars['training_loss']:.4g}")
    if stats is not None:
      eta = (n - step) / max(stats["steps_per_sec"], 1e-9)
      parts.append(f"{stats['steps_per_sec']:.2f} steps/s, {stats['images_per_sec']:.1f} img/s")
      parts.append(f"ETA {_hms(eta)}")
    elif step == self._start + 1:
      parts.append("compiled" if self._start == 0 else f"resumed from step {self._start}")
    line = " | ".join(parts)
    if self._tty:
      sys.stderr.write("\r" + line.ljust(100))
      sys.stderr.flush()
      self._drawn = True
    elif jax.process_index() == 0:
      logging.info("%s", line)

  def close(self) -> None:
    if self._drawn:
      sys.stderr.write("\n")
      sys.stderr.flush()
      self._drawn = False


def _hms(seconds: float) -> str:
  seconds = int(seconds)
  return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m{seconds % 60:02d}s"
