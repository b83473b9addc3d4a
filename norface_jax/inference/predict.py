"""Predictions for a folder of face crops with a trained stage-2 workdir.

Writes one CSV row per image: AU probabilities (detection), AU intensities, or emotion
scores and the predicted emotion (FER). Models with a normalized stream read I_n from a
folder that mirrors the images' relative paths (what `launch/normalize.py` writes).
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import sys
import time
from typing import Any, Iterator, Sequence

import jax
import numpy as np
from absl import logging

from norface_jax.data.images import load_image
from norface_jax.inference import evaluate, media
from norface_jax.training import sharding, stage2
from norface_jax.training import workdir as workdir_lib

def list_images(root: str) -> list[str]:
  """Relative paths of the images under folder `root`, sorted."""
  if not os.path.isdir(root):
    raise FileNotFoundError(f"--images={root!r} is not a directory")
  return [os.path.relpath(p, root) for p in media.list_images(root)]


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
  eval_fn, frozen = evaluate.jit_eval_step(setup, config)  # Online I_n: made in the step.
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


# --- Whole photos and videos: detect, align, (normalize,) predict. ---

def au_column(name: str, suffix: str) -> str:
  """"AU1" -> "AU01_c": OpenFace's column names (`_c` presence, `_r` intensity)."""
  return f"AU{int(name[2:]):02d}_{suffix}" if name.startswith("AU") and name[2:].isdigit() \
      else f"{name}_{suffix}"


def output_columns(task: Any) -> list[str]:
  """The label columns of a row: AU presence (0/1) and probability for detection, AU
  intensity for intensity, one probability per emotion and the label for FER."""
  if task.name == "au_detection":
    return [c for n in task.label_names for c in (au_column(n, "c"), au_column(n, "prob"))]
  if task.name == "au_intensity":
    return [au_column(n, "r") for n in task.label_names]
  return [str(n).lower() for n in task.label_names] + ["emotion"]


def output_values(task: Any, pred: np.ndarray) -> list[str]:
  if task.name == "au_detection":
    return [v for p in pred for v in (str(int(p >= 0.5)), f"{p:.4f}")]
  if task.name == "au_intensity":
    return [f"{p:.3f}" for p in pred]
  return [f"{p:.4f}" for p in pred] + [str(task.label_names[int(np.argmax(pred))])]


ROW_COLUMNS = ["file", "frame", "time", "face", "success", "note", "det_score",
               "x0", "y0", "x1", "y1"] + [f"{p}_{a}" for p in ("eye_l", "eye_r", "nose", "mouth_l",
                                                                  "mouth_r") for a in "xy"]


class _Progress:
  """`predict [####....] 120/300 frames | 14.2 frames/s | ETA 13 s`: redrawn on a
  terminal, logged at every tenth elsewhere."""

  def __init__(self, total: int):
    self.total, self.count, self.t0 = total, 0, time.perf_counter()
    self._tty, self._logged = sys.stderr.isatty(), 0

  def update(self, n: int) -> None:
    self.count += n
    rate = self.count / max(time.perf_counter() - self.t0, 1e-9)
    if self.total:
      filled = min(20, 20 * self.count // self.total)
      eta = max(self.total - self.count, 0) / max(rate, 1e-9)
      line = (f"predict [{'#' * filled}{'.' * (20 - filled)}] {self.count}/{self.total} frames | "
              f"{rate:.1f} frames/s | ETA {eta:.0f} s")
    else:
      line = f"predict {self.count} frames | {rate:.1f} frames/s"
    if self._tty:
      sys.stderr.write("\r" + line.ljust(90))
      sys.stderr.flush()
    elif self.total and 10 * self.count // self.total > self._logged:
      self._logged = 10 * self.count // self.total
      logging.info("%s", line)

  def close(self) -> None:
    if self._tty and self.count:
      sys.stderr.write("\n")


def crop_margin(config: Any) -> float:
  """The face margin the model's training crops were cut with: the prepared dataset's
  (prepared.json), else the prepared datasets' default (SynthFACS renders its own)."""
  from norface_jax.data import prepared
  if not config.data.get("synthetic", False):
    try:
      d = prepared.find_prepared(os.path.expanduser(config.data.data_dir), config.data.dataset,
                                 config.data.get("prepared_config", ""))
      with open(os.path.join(d, prepared.META_FILE)) as f:
        return float(json.load(f)["options"]["margin"])
    except (FileNotFoundError, KeyError):
      pass
  return prepared.PrepareOptions().margin


class _Classifier:
  """The restored stage-2 model as `fn(faces uint8 (n, S, S, 3)) -> (n, labels)`, with
  I_n made in the step by the stage-1 generator where the model has a normalized stream."""

  def __init__(self, workdir: str, which: str, stage1_workdir: str, batch_size: int):
    config = workdir_lib.load_config(workdir)
    if stage2.uses_normalized(config) and not stage2.online(config):
      s1 = stage1_workdir or config.data.get("stage1_workdir", "")
      if not s1:
        raise ValueError(
            f"{workdir} was trained with a normalized stream (normalization="
            f"{config.data.normalization!r}): pass --stage1_workdir=DIR, the trained stage-1 "
            "workdir whose F_nor makes I_n from each detected face")
      config.data.normalization, config.data.stage1_workdir = "online", s1
    setup, self.params, self.step, _ = evaluate.restore_params(config, workdir, which)
    self.config, self.task, self.size = config, setup.task, config.data.image_size
    self.dp = dp = sharding.data_parallel_size(setup.mesh)
    self.batch_size = max(batch_size - batch_size % dp, dp)
    self.mesh = setup.mesh
    self.fn, self.frozen = evaluate.jit_eval_step(setup, config)

  def padded_size(self, n: int) -> int:
    """The batch `n` faces are padded to: the data-parallel size times a power of two,
    at most `batch_size` (a few compiled shapes, little padding for few faces)."""
    size = self.dp
    while size < n and size < self.batch_size:
      size *= 2
    return min(size, self.batch_size)

  def __call__(self, crops: list[np.ndarray]) -> np.ndarray:
    out = []
    for i in range(0, len(crops), self.batch_size):
      part = crops[i:i + self.batch_size]
      n, size = len(part), self.padded_size(len(part))
      images = np.stack(part + [part[-1]] * (size - n))
      batch = {"image": images, "_valid": np.float32([1.0] * n + [0.0] * (size - n))}
      preds = self.fn(self.params, sharding.host_to_global(batch, self.mesh), self.frozen)
      out.append(np.asarray(jax.device_get(preds["preds"]))[:n])
    return np.concatenate(out) if out else np.zeros((0, len(self.task.label_names)), np.float32)


def predict_media(workdir: str, out: str, *, images: str = "", videos: Sequence[str] = (),
                  stage1_workdir: str = "", which: str = "best", batch_size: int = 32,
                  detect_batch: int = 8, canvas: int = 640, max_faces: int = 0,
                  min_score: float = 0.0, sheet: str = "", sheet_frames: int = 16,
                  finder: Any = None) -> dict[str, Any]:
  """Predicts every face of every photo under `images` and every frame of `videos` into
  the CSV `out`: one row per face and frame (`ROW_COLUMNS` + the label columns). A frame
  without a face gets one row with success 0 and note "no face"; an unreadable file one
  row with success 0 and the error, logged, and the job goes on. Frames are read,
  detected and classified in batches (`detect_batch` frames), so memory stays flat.

  Writes a contact sheet (`sheet`, default `<out stem>_sheet.png`) of the first
  `sheet_frames` frames with their boxes, landmarks and predictions. Returns counts and
  seconds per stage (decode, detect, align, classify) and frames/s.
  """
  from norface_jax.detection import crops as crops_lib
  classifier = _Classifier(workdir, which, stage1_workdir, batch_size)
  finder = finder or crops_lib.FaceFinder(canvas=canvas, max_faces=max_faces,
                                          min_score=min_score)
  margin, task = crop_margin(classifier.config), classifier.task
  sheet = sheet or os.path.splitext(out)[0] + "_sheet.png"
  seconds = dict(decode=0.0, detect=0.0, align=0.0, classify=0.0)
  counts = dict(frames=0, faces=0, no_face=0, unreadable=0)
  shown: list[tuple[str, np.ndarray, list[Any], list[str]]] = []
  progress = _Progress(media.count_frames(images, videos))
  t_start = time.perf_counter()
  stream = media.frames(images, videos)
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(ROW_COLUMNS + output_columns(task))
    empty = [""] * (len(ROW_COLUMNS) - 6 + len(output_columns(task)))
    while True:
      t0 = time.perf_counter()
      chunk = list(itertools.islice(stream, detect_batch))
      seconds["decode"] += time.perf_counter() - t0
      if not chunk:
        break
      good = [fr for fr in chunk if fr.image is not None]
      for fr in chunk:
        if fr.image is None:
          logging.error("%s", fr.error)
          counts["unreadable"] += 1
      t0 = time.perf_counter()
      found = finder([fr.image for fr in good])  # Letterboxed: one batch, whatever the sizes.
      seconds["detect"] += time.perf_counter() - t0
      t0 = time.perf_counter()
      crops = [crops_lib.align(fr.image, face, classifier.size, margin)
               for fr, fs in zip(good, found) for face in fs]
      seconds["align"] += time.perf_counter() - t0
      t0 = time.perf_counter()
      preds = classifier(crops)
      seconds["classify"] += time.perf_counter() - t0
      k, g = 0, 0
      for fr in chunk:
        base = [fr.file, fr.index, f"{fr.time:.3f}"]
        if fr.image is None:
          w.writerow(base + [-1, 0, fr.error] + empty)
          continue
        fs = found[g]
        g += 1
        counts["frames"] += 1
        labels = []
        if not fs:
          counts["no_face"] += 1
          w.writerow(base + [-1, 0, "no face"] + empty)
        for j, face in enumerate(fs):
          values = output_values(task, preds[k])
          labels.append(_short_label(task, preds[k]))
          k += 1
          counts["faces"] += 1
          w.writerow(base + [j, 1, "", f"{face.score:.4f}"]
                     + [f"{v:.1f}" for v in face.box]
                     + [f"{v:.1f}" for v in face.landmarks.reshape(-1)] + values)
        if len(shown) < sheet_frames:
          shown.append((f"{os.path.basename(fr.file)} #{fr.index}", fr.image, fs, labels))
      progress.update(len(chunk))
  progress.close()
  total = time.perf_counter() - t_start
  if shown:
    contact_sheet(shown, sheet)
  result = dict(counts, seconds=seconds, total_seconds=total, checkpoint_step=classifier.step,
                frames_per_second=counts["frames"] / max(total, 1e-9), out=out,
                sheet=sheet if shown else "")
  logging.info("Wrote %d faces in %d frames (%d without a face, %d unreadable files) to %s "
               "(checkpoint step %d), %.1f frames/s; seconds: %s.", counts["faces"],
               counts["frames"], counts["no_face"], counts["unreadable"], out, classifier.step,
               result["frames_per_second"], {k: round(v, 2) for k, v in seconds.items()})
  return result


def _short_label(task: Any, pred: np.ndarray) -> str:
  """What the contact sheet writes beside a face: the emotion, or the AUs present."""
  if task.name == "fer":
    return f"{task.label_names[int(np.argmax(pred))]} {float(np.max(pred)):.2f}"
  if task.name == "au_detection":
    on = [n for n, p in zip(task.label_names, pred) if p >= 0.5]
    return " ".join(on[:6]) or "no AU"
  return " ".join(f"{n}:{p:.1f}" for n, p in zip(task.label_names, pred) if p >= 1.0)[:40]


def contact_sheet(shown: list[tuple[str, np.ndarray, list[Any], list[str]]], path: str,
                  cell: int = 320) -> None:
  """A grid of frames (captioned with file and frame number) with each face's box,
  landmarks and predicted label."""
  from PIL import Image, ImageDraw
  cols = min(4, len(shown))
  rows = -(-len(shown) // cols)
  sheet = Image.new("RGB", (cols * cell, rows * cell), (32, 32, 32))
  for n, (caption, image, fs, labels) in enumerate(shown):
    h, w = image.shape[:2]
    scale = cell / max(h, w)
    im = Image.fromarray(image).resize((max(1, round(w * scale)), max(1, round(h * scale))))
    draw = ImageDraw.Draw(im)
    for face, label in zip(fs, labels):
      x0, y0, x1, y1 = (float(v) * scale for v in face.box)
      draw.rectangle([x0, y0, x1, y1], outline=(0, 255, 0), width=2)
      for x, y in face.landmarks * scale:
        draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=(255, 0, 0))
      draw.text((x0 + 2, max(0, y0 - 12)), label, fill=(255, 255, 0))
    if not fs:
      draw.text((4, 4), "no face", fill=(255, 80, 80))
    draw.text((4, im.height - 14), caption, fill=(255, 255, 255))
    sheet.paste(im, ((n % cols) * cell, (n // cols) * cell))
  sheet.save(path)
