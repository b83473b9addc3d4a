"""Predictions for a folder of face crops with a trained stage-2 workdir.

Writes one CSV row per image: AU probabilities (detection), AU intensities, or emotion
scores and the predicted emotion (FER). Models with a normalized stream read I_n from a
folder that mirrors the images' relative paths (what `launch/normalize.py` writes).
"""

from __future__ import annotations

import csv
import os
from typing import Iterator

import jax
import numpy as np
from absl import logging

from norface_jax.data.images import load_image
from norface_jax.inference import evaluate
from norface_jax.training import sharding, stage2
from norface_jax.training import workdir as workdir_lib

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def list_images(root: str) -> list[str]:
  """Relative paths of the images under `root`, sorted."""
  if not os.path.isdir(root):
    raise FileNotFoundError(f"--images={root!r} is not a directory")
  found = []
  for dirpath, _, files in os.walk(root):
    for f in files:
      if f.lower().endswith(IMAGE_SUFFIXES):
        found.append(os.path.relpath(os.path.join(dirpath, f), root))
  if not found:
    raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root!r}")
  return sorted(found)


def _batches(paths: list[str], batch_size: int) -> Iterator[list[str]]:
  for i in range(0, len(paths), batch_size):
    yield paths[i:i + batch_size]


def predict_folder(workdir: str, images: str, out: str, *, normalized: str = "",
                   batch_size: int = 64, which: str = "best", skip_bad: bool = False) -> int:
  """Predicts every image under `images` into the CSV `out`; returns the row count."""
  config = workdir_lib.load_config(workdir)
  two_streams = stage2.uses_normalized(config) and not stage2.online(config)
  mode = config.data.normalization
  if two_streams:
    normalized = normalized or config.data.get("normalized_dir", "")
    if not normalized:
      raise ValueError(
          f"{workdir} was trained with a normalized stream (normalization={mode!r}); pass "
          "--normalized=DIR with the normalized faces at the same relative paths as --images "
          "(launch/normalize.py writes that layout)")
  setup, params, step, _ = evaluate.restore_params(config, workdir, which)
  task, size = setup.task, config.data.image_size
  batch_size = max(batch_size - batch_size % sharding.data_parallel_size(setup.mesh),
                   sharding.data_parallel_size(setup.mesh))
  prepare_fn, frozen = stage2.load_frozen(config)  # online I_n, features: made in the step.
  eval_fn = jax.jit(stage2.make_eval_step(setup.model, task, config, prepare_fn),
                    in_shardings=(setup.state_shardings.params, sharding.batch_sharding(setup.mesh),
                                  sharding.replicated(setup.mesh)),
                    out_shardings=sharding.replicated(setup.mesh))
  paths = list_images(images)
  bad = 0
  rows = 0
  with open(out, "w", newline="") as f:
    w = csv.writer(f)
    header = ["path"] + [str(n) for n in task.label_names]
    if task.name == "fer":
      header.append("prediction")
    w.writerow(header)
    for chunk in _batches(paths, batch_size):
      batch_o, batch_n, kept = [], [], []
      for rel in chunk:
        try:
          img = load_image(os.path.join(images, rel), size)
          img_n = load_image(os.path.join(normalized, rel), size) if two_streams else None
        except (ValueError, FileNotFoundError) as e:
          if not skip_bad:
            raise
          logging.warning("skipping: %s", e)
          bad += 1
          continue
        batch_o.append(img)
        batch_n.append(img_n)
        kept.append(rel)
      if not kept:
        continue
      n = len(kept)
      pad = lambda xs: np.stack(xs + [xs[-1]] * (batch_size - n))
      batch = {"image": pad(batch_o), "_valid": np.float32([1.0] * n + [0.0] * (batch_size - n))}
      if two_streams:
        batch["image_norm"] = pad(batch_n)
      preds = jax.device_get(
          eval_fn(params, sharding.host_to_global(batch, setup.mesh), frozen)["preds"])[:n]
      for rel, p in zip(kept, preds):
        row = [rel] + [f"{v:.6f}" for v in p]
        if task.name == "fer":
          row.append(task.label_names[int(np.argmax(p))])
        w.writerow(row)
        rows += 1
  logging.info("Wrote %d predictions (checkpoint step %d) to %s%s.", rows, step, out,
               f"; skipped {bad} unreadable images" if bad else "")
  return rows
