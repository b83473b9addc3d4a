"""Face crops: box with margin, 5-point similarity alignment, resize, histogram equalization.

Pure NumPy/PIL functions on uint8 images (H, W, 3) or (H, W). Points are (x, y) pixels.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# ArcFace's 5-point template (left eye, right eye, nose tip, left and right mouth
# corners) in a 112x112 crop; scaled to other sizes.
REFERENCE_5PTS_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                               [41.5493, 92.3655], [70.7299, 92.2041]], np.float64)


def square_box(box, margin: float = 0.0) -> tuple[float, float, float]:
  """(x, y, w, h) -> (x0, y0, side): the square on the box's centre, grown by `margin`.

  margin is the fraction of the box's longer side added on each side (0.1 -> 1.2x).
  """
  x, y, w, h = (float(v) for v in box)
  side = max(w, h) * (1.0 + 2.0 * margin)
  cx, cy = x + w / 2.0, y + h / 2.0
  return cx - side / 2.0, cy - side / 2.0, side


def crop_box(image: np.ndarray, box, margin: float = 0.0, size: int | None = None) -> np.ndarray:
  """The square crop around `box` (+ margin); outside the image is black. Resized to size."""
  x0, y0, side = square_box(box, margin)
  x0i, y0i, s = int(round(x0)), int(round(y0)), max(1, int(round(side)))
  h, w = image.shape[:2]
  out = np.zeros((s, s) + image.shape[2:], image.dtype)
  sx0, sy0 = max(0, x0i), max(0, y0i)
  sx1, sy1 = min(w, x0i + s), min(h, y0i + s)
  if sx1 > sx0 and sy1 > sy0:
    out[sy0 - y0i:sy1 - y0i, sx0 - x0i:sx1 - x0i] = image[sy0:sy1, sx0:sx1]
  return resize(out, size) if size else out


def center_square(image: np.ndarray) -> np.ndarray:
  """The largest centred square (whole frames without a face box)."""
  h, w = image.shape[:2]
  s = min(h, w)
  y0, x0 = (h - s) // 2, (w - s) // 2
  return image[y0:y0 + s, x0:x0 + s]


def resize(image: np.ndarray, size: int) -> np.ndarray:
  """Bilinear resize to (size, size); a no-op at that size already."""
  if image.shape[0] == size and image.shape[1] == size:
    return image
  return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))


def five_points(landmarks68: np.ndarray) -> np.ndarray:
  """iBUG-68 -> 5 points: eye centres (36-41, 42-47), nose tip (30), mouth corners (48, 54)."""
  lm = np.asarray(landmarks68, np.float64).reshape(68, 2)
  return np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
  """The least-squares similarity (rotation, uniform scale, shift) taking src to dst.

  Umeyama (1991). Returns M (2, 3) with dst ~= src @ M[:, :2].T + M[:, 2].
  """
  src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
  mu_s, mu_d = src.mean(0), dst.mean(0)
  s_c, d_c = src - mu_s, dst - mu_d
  cov = d_c.T @ s_c / len(src)
  u, sig, vt = np.linalg.svd(cov)
  d = np.ones(2)
  if np.linalg.det(u) * np.linalg.det(vt) < 0:
    d[-1] = -1
  rot = u @ np.diag(d) @ vt
  var_s = (s_c ** 2).sum() / len(src)
  scale = (sig * d).sum() / var_s if var_s > 0 else 1.0
  m = np.zeros((2, 3))
  m[:, :2] = scale * rot
  m[:, 2] = mu_d - scale * rot @ mu_s
  return m


def warp_affine(image: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
  """Output (size, size) image whose pixel p is the input at M^-1 p (bilinear, black fill)."""
  full = np.vstack([m, [0.0, 0.0, 1.0]])
  inv = np.linalg.inv(full)[:2]
  # PIL samples at pixel centres: out (x+.5, y+.5) -> in; shift to corner coordinates.
  coeffs = inv.copy()
  coeffs[:, 2] = inv[:, 2] + 0.5 * inv[:, 0] + 0.5 * inv[:, 1] - 0.5
  out = Image.fromarray(image).transform((size, size), Image.AFFINE, coeffs.reshape(-1).tolist(),
                                         resample=Image.BILINEAR)
  return np.asarray(out)


def align_five_points(image: np.ndarray, points5: np.ndarray, size: int,
                      zoom: float = 1.0) -> np.ndarray:
  """Similarity-aligns a face so its 5 points land on the (scaled) ArcFace template.

  zoom < 1 shows more context around the face (the template shrinks about the centre).
  """
  ref = (REFERENCE_5PTS_112 - 56.0) * zoom + 56.0
  ref = ref * (size / 112.0)
  return warp_affine(image, similarity_transform(points5, ref), size)


def equalize_histogram(image: np.ndarray) -> np.ndarray:
  """Histogram equalization (as DeepFN): gray (H, W) directly; RGB on its luma (YCbCr).

  lut[v] = round(255 * (cdf[v] - cdf_min) / (N - cdf_min)); constant images are unchanged.
  """
  image = np.asarray(image, np.uint8)
  if image.ndim == 3:
    ycc = np.asarray(Image.fromarray(image).convert("YCbCr")).copy()
    ycc[..., 0] = equalize_histogram(ycc[..., 0])
    return np.asarray(Image.fromarray(ycc, "YCbCr").convert("RGB"))
  hist = np.bincount(image.reshape(-1), minlength=256)
  cdf = np.cumsum(hist)
  cdf_min = cdf[hist > 0][0]
  n = image.size
  if n == cdf_min:
    return image.copy()
  lut = np.round((cdf - cdf_min) / (n - cdf_min) * 255.0)
  return np.clip(lut, 0, 255).astype(np.uint8)[image]
