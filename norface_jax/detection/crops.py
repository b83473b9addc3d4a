"""Faces found in whole pictures, aligned to a model's crop convention.

`FaceFinder` runs the MTCNN detector (`mtcnn.py`) on batches of frames of any size: each
frame is scaled to fit a fixed canvas (`canvas` px on its longer side, padded black to
the canvas), so photos of every size and a video's frames share one compiled detector;
boxes and landmarks are mapped back to the frame's own pixels. `align` cuts a face the
way the prepared datasets store them (`data/prepared.py`: 5-point similarity alignment
onto the ArcFace template, zoomed out by the dataset's margin).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from PIL import Image

from norface_jax.data import faces as faces_lib


@dataclasses.dataclass
class Face:
  """One detected face in frame pixels: box (x0, y0, x1, y1), score, landmarks (5, 2)
  (x, y of the eyes, the nose tip and the mouth corners, the image's left one first:
  the ArcFace template's order)."""
  box: np.ndarray
  score: float
  landmarks: np.ndarray


def letterbox(image: np.ndarray, canvas: int) -> tuple[np.ndarray, float]:
  """`image` scaled so its longer side is `canvas` px, on a black canvas x canvas
  image (top left); returns it and the scale (canvas px per frame px)."""
  h, w = image.shape[:2]
  scale = canvas / max(h, w)
  nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
  out = np.zeros((canvas, canvas, 3), np.uint8)
  out[:nh, :nw] = image if (nh, nw) == (h, w) else np.asarray(
      Image.fromarray(image).resize((nw, nh), Image.BILINEAR))
  return out, scale


class FaceFinder:
  """Batched face detection on frames of any size (see the module docstring).

  max_faces: keep at most this many faces per frame, the highest-scoring (0: all).
  min_score: drop faces whose final (O-Net) score is below it.
  """

  def __init__(self, detector=None, *, canvas: int = 640, max_faces: int = 0,
               min_score: float = 0.0):
    if detector is None:
      from norface_jax.detection import mtcnn
      detector = mtcnn.MTCNN()
    self.detector, self.canvas = detector, canvas
    self.max_faces, self.min_score = max_faces, min_score

  def __call__(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
    """The faces of each image, by descending score."""
    if not len(images):
      return []
    boxed = [letterbox(np.asarray(im, np.uint8), self.canvas) for im in images]
    found = self.detector.detect(np.stack([b for b, _ in boxed]))
    out = []
    for (_, scale), det in zip(boxed, found):
      keep = [i for i in np.argsort(-np.asarray(det.scores), kind="stable")
              if det.scores[i] >= self.min_score]
      if self.max_faces:
        keep = keep[:self.max_faces]
      out.append([Face(np.asarray(det.boxes[i], np.float32) / scale, float(det.scores[i]),
                       np.asarray(det.landmarks[i], np.float32) / scale) for i in keep])
    return out


def align(image: np.ndarray, face: Face, size: int, margin: float = 0.1) -> np.ndarray:
  """The (size, size) crop of `face` as `data/prepared.py` stores faces with landmarks:
  its 5 points on the ArcFace template, zoomed out by 1 / (1 + 2 * margin)."""
  return faces_lib.align_five_points(image, face.landmarks, size,
                                     zoom=1.0 / (1.0 + 2.0 * margin))
