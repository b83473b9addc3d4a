"""Frames with SynthFACS faces at known places, and detection recall on them.

Each face is rendered alone (`synthfacs.scene.render`, its own background square) and
pasted into a larger frame without overlap; its true box is the bounding box of its 68
landmarks (brows to chin), so a detector's box, which also covers the forehead,
overlaps it by IoU about 0.7 when it is right.
"""

from __future__ import annotations

import numpy as np

from norface_jax.data import labels
from norface_jax.data.synthfacs import expression, identity, scene


def render_scenes(num: int, height: int, width: int, *, faces: int = 3,
                  sizes: tuple[int, int] = (64, 224),
                  seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
  """`num` uint8 frames (num, height, width, 3), each with up to `faces` faces of
  rendered sizes in `sizes` px (lab and wild domains alternate), and per frame the true
  boxes (k, 4) x0, y0, x1, y1."""
  rng = np.random.default_rng(seed)
  frames = np.empty((num, height, width, 3), np.uint8)
  truth = []
  for f in range(num):
    frames[f] = rng.integers(40, 216, 3) + rng.integers(-12, 13, (height, width, 1))
    placed, boxes = [], []
    for k in range(faces):
      size = int(rng.integers(sizes[0], min(sizes[1], height, width) + 1))
      for _ in range(50):  # rejection-sample a free spot.
        y, x = int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))
        if all(x + size <= px or px + ps <= x or y + size <= py or py + ps <= y
               for px, py, ps in placed):
          break
      else:
        continue
      dom = (f + k) % 2
      au, asym = expression.sample_expression(rng, int(rng.integers(len(labels.EMOTIONS))))
      out = scene.render(identity.sample_identity(rng), au[None], scene.sample_pose(rng, dom),
                         size=size, asym=np.float32([asym]), scene=scene.sample_scene(rng, dom))
      frames[f, y:y + size, x:x + size] = out["image"][0]
      lm = out["landmarks"][0]
      boxes.append(np.r_[lm.min(0) + (x, y), lm.max(0) + (x, y)])
      placed.append((x, y, size))
    truth.append(np.asarray(boxes, np.float32).reshape(-1, 4))
  return frames, truth


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """IoU matrix (n, m) of boxes a (n, 4) and b (m, 4), x0, y0, x1, y1."""
  a, b = np.asarray(a, np.float64)[:, None], np.asarray(b, np.float64)[None]
  w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
  h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
  area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
  return w * h / (area(a) + area(b) - w * h)


def match(found: list[np.ndarray], truth: list[np.ndarray],
          threshold: float = 0.5) -> dict[str, float]:
  """Recall (true boxes with a found box of IoU >= threshold), the found boxes that
  match no true box (false positives), and the matched boxes' mean IoU."""
  hits, total, extra, ious = 0, 0, 0, []
  for f, t in zip(found, truth):
    m = iou(t, f) if len(t) and len(f) else np.zeros((len(t), len(f)))
    best = m.max(1) if len(f) else np.zeros(len(t))
    hits += int((best >= threshold).sum())
    total += len(t)
    extra += int((m.max(0) < threshold).sum()) if len(t) else len(f)
    ious += list(best[best >= threshold])
  return {"recall": hits / max(total, 1), "faces": total, "false_positives": extra,
          "mean_iou": float(np.mean(ious)) if ious else float("nan")}
