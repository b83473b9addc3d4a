"""MTCNN face detection with 5-point landmarks: facenet-pytorch's detector in JAX/Flax.

P-, R- and O-Net (Zhang et al. 2016) are Flax modules loaded with the weights that
facenet-pytorch 2.6.0 (MIT) ships in its wheel (`load_params`, which reads the files
without importing the package). `MTCNN.detect` is facenet's `detect_face` step for
step: the same image pyramid, thresholds, NMS, box regressions and integer crop
conventions, and torch's `interpolate(mode="area")` reproduced bit for bit
(`imresample`), so boxes match facenet's to float rounding (tests/test_detection.py).
Two departures: NMS runs image by image (facenet shifts each image's boxes apart and
runs one NMS: the same up to rounding), and a box whose crop would be empty is dropped
(facenet raises). Convolutions and dense layers run at "highest" precision (float32,
no TF32 or bf16 passes on accelerators).

Where it runs: the networks are jitted JAX functions on the default device. P-Net runs
on every pyramid scale of the whole batch in one jitted call per image shape (the
pyramid is resampled on the device), so a video of fixed frame size compiles it once;
R-Net and O-Net run on all crops of the batch at once, padded to `rnet_bucket` times a
power of two, so few shapes compile. NMS, box bookkeeping and the 24/48 px crops run in
NumPy on the host, in float32 like facenet's tensors. Each network call moves its input
to the device once and its output back once.

Boxes are (x0, y0, x1, y1) pixels; landmarks (x, y) in facenet's order: the eye on the
image's left, the other eye, the nose tip, the mouth corner on the image's left, the
other corner (the ArcFace template's order). B images, N candidate boxes.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

F32 = np.float32
WHEEL = "facenet-pytorch==2.6.0"
# The input each network is trained at (P-Net is fully convolutional; 12 is its cell).
INPUT_SIZES = {"pnet": 12, "rnet": 24, "onet": 48}


# ---------------------------------------------------------------------------------------
# Networks.


class PReLU(nn.Module):
  """PReLU with one slope per channel (torch `nn.PReLU(C)`)."""

  @nn.compact
  def __call__(self, x):
    slope = self.param("slope", nn.initializers.constant(0.25), (x.shape[-1],), jnp.float32)
    return jnp.where(x > 0, x, slope * x)


def max_pool_ceil(x, window: int, stride: int):
  """torch `MaxPool2d(window, stride, ceil_mode=True)` on NHWC: the last window may hang
  over the bottom/right edge, where the input is padded with -inf."""
  pads = []
  for n in x.shape[1:3]:
    out = -(-(n - window) // stride) + 1
    if (out - 1) * stride >= n:  # torch: the last window must start inside the input.
      out -= 1
    pads.append((0, max(0, (out - 1) * stride + window - n)))
  return nn.max_pool(x, (window, window), (stride, stride), padding=pads)


def flatten_torch(x):
  """(B, H, W, C) -> (B, W*H*C) in the order of facenet's `x.permute(0, 3, 2, 1)` of an
  NCHW tensor, so its dense weights apply unchanged."""
  return x.transpose(0, 2, 1, 3).reshape(x.shape[0], -1)


class PNet(nn.Module):
  """Proposal net, fully convolutional: (B, H, W, 3) normalised images -> box
  regressions (B, h, w, 4) and face/non-face probabilities (B, h, w, 2) of the 12 px
  cells at stride 2 (facenet's `(b, a)` order)."""
  precision: Any = "highest"

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(nn.Conv, padding="VALID", precision=self.precision)
    x = PReLU(name="prelu1")(conv(10, (3, 3), name="conv1")(x))
    x = max_pool_ceil(x, 2, 2)
    x = PReLU(name="prelu2")(conv(16, (3, 3), name="conv2")(x))
    x = PReLU(name="prelu3")(conv(32, (3, 3), name="conv3")(x))
    prob = nn.softmax(conv(2, (1, 1), name="conv4_1")(x))
    return conv(4, (1, 1), name="conv4_2")(x), prob


class RNet(nn.Module):
  """Refinement net: (N, 24, 24, 3) normalised crops -> regressions (N, 4), probs (N, 2)."""
  precision: Any = "highest"

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(nn.Conv, padding="VALID", precision=self.precision)
    x = PReLU(name="prelu1")(conv(28, (3, 3), name="conv1")(x))
    x = max_pool_ceil(x, 3, 2)
    x = PReLU(name="prelu2")(conv(48, (3, 3), name="conv2")(x))
    x = max_pool_ceil(x, 3, 2)
    x = PReLU(name="prelu3")(conv(64, (2, 2), name="conv3")(x))
    x = nn.Dense(128, precision=self.precision, name="dense4")(flatten_torch(x))
    x = PReLU(name="prelu4")(x)
    prob = nn.softmax(nn.Dense(2, precision=self.precision, name="dense5_1")(x))
    return nn.Dense(4, precision=self.precision, name="dense5_2")(x), prob


class ONet(nn.Module):
  """Output net: (N, 48, 48, 3) normalised crops -> regressions (N, 4), landmarks (N, 10)
  (5 x then 5 y, as fractions of the box), probs (N, 2)."""
  precision: Any = "highest"

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(nn.Conv, padding="VALID", precision=self.precision)
    dense = functools.partial(nn.Dense, precision=self.precision)
    x = PReLU(name="prelu1")(conv(32, (3, 3), name="conv1")(x))
    x = max_pool_ceil(x, 3, 2)
    x = PReLU(name="prelu2")(conv(64, (3, 3), name="conv2")(x))
    x = max_pool_ceil(x, 3, 2)
    x = PReLU(name="prelu3")(conv(64, (3, 3), name="conv3")(x))
    x = max_pool_ceil(x, 2, 2)
    x = PReLU(name="prelu4")(conv(128, (2, 2), name="conv4")(x))
    x = PReLU(name="prelu5")(dense(256, name="dense5")(flatten_torch(x)))
    prob = nn.softmax(dense(2, name="dense6_1")(x))
    return dense(4, name="dense6_2")(x), dense(10, name="dense6_3")(x), prob


NETS = {"pnet": PNet, "rnet": RNet, "onet": ONet}


# ---------------------------------------------------------------------------------------
# Weights.


def default_weights_dir() -> str:
  """facenet_pytorch/data of the installed wheel, found without importing the package
  (its __init__ imports torchvision)."""
  spec = importlib.util.find_spec("facenet_pytorch")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(f"facenet_pytorch is not installed, and MTCNN's weights ship "
                            f"in its wheel: pip install --no-deps {WHEEL}")
  return os.path.join(list(spec.submodule_search_locations)[0], "data")


def convert(state_dict: dict[str, Any], name: str) -> dict[str, Any]:
  """facenet's state dict of one net -> Flax variables {"params": ...} (NumPy).

  Conv OIHW -> HWIO, dense (out, in) -> (in, out), PReLU weight -> slope. The result
  must have exactly the module's parameter shapes.
  """
  params: dict[str, dict[str, np.ndarray]] = {}
  for key, value in state_dict.items():
    layer, kind = key.rsplit(".", 1)
    v = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value, F32)
    if kind == "bias":
      params.setdefault(layer, {})["bias"] = v
    elif layer.startswith("prelu"):
      params.setdefault(layer, {})["slope"] = v
    elif v.ndim == 4:
      params.setdefault(layer, {})["kernel"] = v.transpose(2, 3, 1, 0)
    else:
      params.setdefault(layer, {})["kernel"] = v.T
  size = INPUT_SIZES[name]
  want = jax.eval_shape(NETS[name]().init, jax.random.key(0),
                        jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32))["params"]
  got_shapes = jax.tree.map(np.shape, params)
  want_shapes = jax.tree.map(lambda s: tuple(s.shape), want)
  if got_shapes != want_shapes:
    raise ValueError(f"{name}: state dict shapes {got_shapes} != module's {want_shapes}")
  return {"params": jax.tree.map(np.ascontiguousarray, params)}


def load_params(weights_dir: str | None = None) -> dict[str, Any]:
  """{"pnet", "rnet", "onet"} -> Flax variables, from `<weights_dir>/{pnet,rnet,onet}.pt`
  (default: the installed facenet-pytorch wheel's data folder)."""
  import torch
  weights_dir = weights_dir or default_weights_dir()
  out = {}
  for name in NETS:
    path = os.path.join(weights_dir, f"{name}.pt")
    if not os.path.exists(path):
      raise FileNotFoundError(f"MTCNN weights {path} not found: pip install --no-deps "
                              f"{WHEEL} (its wheel ships them), or pass weights_dir")
    out[name] = convert(torch.load(path, map_location="cpu", weights_only=True), name)
  return out


# ---------------------------------------------------------------------------------------
# Resampling (torch `interpolate(mode="area")`, i.e. adaptive average pooling).


def window_bounds(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
  """Output cell i averages inputs floor(i n_in / n_out) .. ceil((i + 1) n_in / n_out) - 1."""
  i = np.arange(n_out)
  return (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)


def imresample(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """facenet's `imresample` of an integer (..., H, W, C) image -> float32 (..., h, w, C).

  Window sums are exact integers (cumulative sums), divided in float32 by the window's
  height and then its width: torch's arithmetic, so the result is bit for bit equal.
  """
  x = np.asarray(image)
  if not np.issubdtype(x.dtype, np.integer):
    raise TypeError(f"imresample sums integer pixels exactly; got {x.dtype}")
  (y0, y1), (x0, x1) = window_bounds(x.shape[-3], size[0]), window_bounds(x.shape[-2], size[1])
  cs = np.cumsum(x, axis=-3, dtype=np.int64)
  cs = np.concatenate([np.zeros_like(cs[..., :1, :, :]), cs], axis=-3)
  rows = np.cumsum(cs[..., y1, :, :] - cs[..., y0, :, :], axis=-2)
  rows = np.concatenate([np.zeros_like(rows[..., :1, :]), rows], axis=-2)
  sums = (rows[..., x1, :] - rows[..., x0, :]).astype(F32)
  return sums / (y1 - y0).astype(F32)[:, None, None] / (x1 - x0).astype(F32)[:, None]


def _imresample_device(integral, size: tuple[int, int]):
  """`imresample` in JAX from the images' integral image (B, H + 1, W + 1, C) int32
  (computed once for all pyramid scales): four corner lookups per output pixel. int32
  wraps past 2**31, but a window's sum (< 2**31) comes out exact all the same."""
  (y0, y1) = window_bounds(integral.shape[1] - 1, size[0])
  (x0, x1) = window_bounds(integral.shape[2] - 1, size[1])
  bottom, top = integral[:, y1], integral[:, y0]
  sums = bottom[:, :, x1] - bottom[:, :, x0] - top[:, :, x1] + top[:, :, x0]
  # XLA turns these divisions into products with reciprocals: within an ulp of torch.
  return (sums.astype(jnp.float32) / (y1 - y0).astype(F32)[:, None, None] /
          (x1 - x0).astype(F32)[:, None])


def _normalise(x):
  return (x - 127.5) * 0.0078125


# ---------------------------------------------------------------------------------------
# Jitted network calls.


def pnet_out_size(n: int) -> int:
  """P-Net's output length for an input length n (three 3x3 convs, a 2/2 ceil pool)."""
  return -(-(n - 4) // 2) + 1 - 4


@functools.partial(jax.jit, static_argnames=("sizes",))
def _pnet_pyramid(variables, images, sizes):
  """P-Net on each pyramid size of uint8 images (B, H, W, 3): (B, sum of h w, 5) rows of
  [face probability, 4 regressions], scale after scale, each in row-major cell order."""
  x = jnp.cumsum(jnp.cumsum(images.astype(jnp.int32), axis=1), axis=2)
  x = jnp.pad(x, ((0, 0), (1, 0), (1, 0), (0, 0)))
  out = []
  for size in sizes:
    reg, prob = PNet().apply(variables, _normalise(_imresample_device(x, size)))
    out.append(jnp.concatenate([prob[..., 1:], reg], -1).reshape(images.shape[0], -1, 5))
  return jnp.concatenate(out, axis=1)


@jax.jit
def _rnet(variables, crops):
  """(N, 24, 24, 3) float32 crops -> (N, 5): [face probability, 4 regressions]."""
  reg, prob = RNet().apply(variables, _normalise(crops))
  return jnp.concatenate([prob[:, 1:], reg], -1)


@jax.jit
def _onet(variables, crops):
  """(N, 48, 48, 3) float32 crops -> (N, 15): [probability, 4 regressions, 10 points]."""
  reg, points, prob = ONet().apply(variables, _normalise(crops))
  return jnp.concatenate([prob[:, 1:], reg, points], -1)


def bucket_size(n: int, bucket: int) -> int:
  """The padded batch for n crops: the smallest bucket * 2**k >= n."""
  size = bucket
  while size < n:
    size *= 2
  return size


# ---------------------------------------------------------------------------------------
# Box bookkeeping (host, float32 like facenet's tensors).


def pyramid_scales(h: int, w: int, min_face_size: float, factor: float) -> list[float]:
  """facenet's scales: 12 / min_face_size, times factor while the short side >= 12 px."""
  m = 12.0 / min_face_size
  minl, scale, scales = min(h, w) * m, m, []
  while minl >= 12:
    scales.append(scale)
    scale, minl = scale * factor, minl * factor
  return scales


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float,
        method: str = "union") -> np.ndarray:
  """Greedy NMS: the kept indices, best first.

  "union": torchvision's `nms` (areas (x1 - x0)(y1 - y0); suppresses IoU > threshold;
  equal scores keep input order). "min": facenet's `nms_numpy(..., "Min")` (areas with
  +1 px; overlap is the intersection over the smaller area; keeps overlap <= threshold).
  """
  boxes, scores = np.asarray(boxes, F32), np.asarray(scores, F32)
  if method == "union":
    order, one = np.argsort(-scores, kind="stable"), F32(0)
  elif method == "min":
    order, one = np.argsort(scores)[::-1], F32(1)
  else:
    raise ValueError(f"method {method!r}: union or min")
  x0, y0, x1, y1 = boxes.T
  area = (x1 - x0 + one) * (y1 - y0 + one)
  keep = []
  while order.size:
    i, rest = order[0], order[1:]
    keep.append(i)
    w = np.maximum(F32(0), np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]) + one)
    h = np.maximum(F32(0), np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]) + one)
    inter = w * h
    if method == "union":  # torchvision compares the float IoU with a double threshold.
      ok = ~((inter / (area[i] + area[rest] - inter)).astype(np.float64) > threshold)
    else:
      ok = inter / np.minimum(area[i], area[rest]) <= F32(threshold)
    order = rest[ok]
  return np.asarray(keep, np.int64)


def _bbreg(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
  """Applies regressions (N, 4) as fractions of the box's size + 1 (facenet's `bbreg`)."""
  w = boxes[:, 2] - boxes[:, 0] + 1
  h = boxes[:, 3] - boxes[:, 1] + 1
  out = boxes.copy()
  out[:, :4] = boxes[:, :4] + reg * np.stack([w, h, w, h], 1)
  return out


def _rerec(boxes: np.ndarray) -> np.ndarray:
  """Squares boxes on their centres (side = the longer side; facenet's `rerec`)."""
  h = boxes[:, 3] - boxes[:, 1]
  w = boxes[:, 2] - boxes[:, 0]
  side = np.maximum(w, h)
  out = boxes.copy()
  out[:, 0] = boxes[:, 0] + w * F32(0.5) - side * F32(0.5)
  out[:, 1] = boxes[:, 1] + h * F32(0.5) - side * F32(0.5)
  out[:, 2:4] = out[:, :2] + side[:, None]
  return out


def _crop_bounds(boxes: np.ndarray, w: int, h: int) -> tuple[np.ndarray, ...]:
  """facenet's `pad`: truncated corners clipped to the image; the crop is rows y - 1 ..
  ey - 1 and columns x - 1 .. ex - 1 (it clips, it does not pad)."""
  b = np.trunc(boxes[:, :4]).astype(np.int32)
  return (np.maximum(b[:, 1], 1), np.minimum(b[:, 3], h),
          np.maximum(b[:, 0], 1), np.minimum(b[:, 2], w))


class Detections(NamedTuple):
  """The faces of one image, best first: boxes (n, 4) x0, y0, x1, y1; scores (n,), the
  O-Net probability; landmarks (n, 5, 2) (x, y), in the module docstring's order."""
  boxes: np.ndarray
  scores: np.ndarray
  landmarks: np.ndarray


class MTCNN:
  """Batched MTCNN (facenet-pytorch's `detect_face`; see the module docstring).

  params: `load_params()` output (default: read from the facenet-pytorch wheel).
  min_face_size: the smallest face searched for, px (sets the pyramid's first scale).
  thresholds: P-, R- and O-Net probability thresholds. factor: pyramid scale step.
  rnet_bucket: R-/O-Net batches are padded to rnet_bucket * 2**k crops.
  """

  def __init__(self, params: dict[str, Any] | None = None, *, min_face_size: float = 20,
               thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
               factor: float = 0.709, rnet_bucket: int = 64):
    self.params = jax.device_put(params if params is not None else load_params())
    self.min_face_size, self.thresholds = min_face_size, tuple(thresholds)
    self.factor, self.rnet_bucket = factor, rnet_bucket

  def detect(self, images: np.ndarray) -> list[Detections]:
    """Faces in uint8 images (B, H, W, 3), or one (H, W, 3): one `Detections` per image."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
      raise TypeError(f"detect expects uint8 images; got {images.dtype}")
    if images.ndim == 3:
      images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"images of shape {images.shape}; expected (B, H, W, 3)")
    return self._output(images, self._refine(images, self._propose(images)))

  # Stage 1: P-Net proposals.
  def _propose(self, images: np.ndarray) -> list[np.ndarray]:
    """Per image: squared candidate boxes (n, 5) [x0, y0, x1, y1, P-Net score]."""
    b, h, w = images.shape[:3]
    scales = pyramid_scales(h, w, self.min_face_size, self.factor)
    if not scales:
      return [np.zeros((0, 5), F32) for _ in range(b)]
    sizes = tuple((int(h * s + 1), int(w * s + 1)) for s in scales)
    out = np.asarray(jax.device_get(_pnet_pyramid(self.params["pnet"], images, sizes)))
    cands: list[list[np.ndarray]] = [[] for _ in range(b)]
    offset = 0
    for scale, (sh, sw) in zip(scales, sizes):
      oh, ow = pnet_out_size(sh), pnet_out_size(sw)
      block = out[:, offset:offset + oh * ow].reshape(b, oh, ow, 5)
      offset += oh * ow
      bi, yi, xi = np.nonzero(block[..., 0] >= self.thresholds[0])
      cells = np.stack([xi, yi], 1).astype(F32)
      q1 = np.floor((cells * 2 + 1) / F32(scale))
      q2 = np.floor((cells * 2 + 12) / F32(scale))
      rows = np.concatenate([q1, q2, block[bi, yi, xi]], 1)  # x0 y0 x1 y1 score reg(4)
      for i in range(b):
        mine = rows[bi == i]
        cands[i].append(mine[nms(mine[:, :4], mine[:, 4], 0.5)])
    result = []
    for per_scale in cands:
      c = np.concatenate(per_scale)
      c = c[nms(c[:, :4], c[:, 4], 0.7)]
      rw, rh = c[:, 2] - c[:, 0], c[:, 3] - c[:, 1]
      boxes = np.stack([c[:, 0] + c[:, 5] * rw, c[:, 1] + c[:, 6] * rh,
                        c[:, 2] + c[:, 7] * rw, c[:, 3] + c[:, 8] * rh, c[:, 4]], 1)
      result.append(_rerec(boxes))
    return result

  def _run_crops(self, fn, variables, images, boxes, size, width):
    """Crops every box of every image to size x size and runs `fn` on all of them at
    once: per image, the boxes whose crop is not empty and their outputs (n, width)."""
    h, w = images.shape[1:3]
    crops, kept = [], []
    for i, bx in enumerate(boxes):
      y, ey, x, ex = _crop_bounds(bx, w, h)
      ok = (ey > y - 1) & (ex > x - 1)  # facenet would fail on empty crops; they go.
      kept.append(bx[ok])
      crops += [imresample(images[i, y[k] - 1:ey[k], x[k] - 1:ex[k]], (size, size))
                for k in np.flatnonzero(ok)]
    if not crops:
      return kept, [np.zeros((0, width), F32) for _ in kept]
    batch = np.zeros((bucket_size(len(crops), self.rnet_bucket), size, size, 3), F32)
    batch[:len(crops)] = np.stack(crops)
    out = np.asarray(jax.device_get(fn(variables, batch)))[:len(crops)]
    return kept, np.split(out, np.cumsum([len(k) for k in kept])[:-1])

  # Stage 2: R-Net.
  def _refine(self, images: np.ndarray, boxes: list[np.ndarray]) -> list[np.ndarray]:
    """Per image: R-Net's boxes (n, 5), regressed and squared, after NMS."""
    kept, outs = self._run_crops(_rnet, self.params["rnet"], images, boxes, 24, 5)
    result = []
    for bx, o in zip(kept, outs):
      ok = o[:, 0] > self.thresholds[1]
      bx, reg = np.concatenate([bx[ok, :4], o[ok, :1]], 1), o[ok, 1:5]
      pick = nms(bx[:, :4], bx[:, 4], 0.7)
      result.append(_rerec(_bbreg(bx[pick], reg[pick])))
    return result

  # Stage 3: O-Net, landmarks.
  def _output(self, images: np.ndarray, boxes: list[np.ndarray]) -> list[Detections]:
    """Per image: O-Net's faces with landmarks, regressed, after NMS over the smaller box."""
    kept, outs = self._run_crops(_onet, self.params["onet"], images, boxes, 48, 15)
    result = []
    for bx, o in zip(kept, outs):
      ok = o[:, 0] > self.thresholds[2]
      bx, reg, pts = np.concatenate([bx[ok, :4], o[ok, :1]], 1), o[ok, 1:5], o[ok, 5:15]
      bw, bh = bx[:, 2] - bx[:, 0] + 1, bx[:, 3] - bx[:, 1] + 1
      px = bw[:, None] * pts[:, :5] + bx[:, :1] - 1
      py = bh[:, None] * pts[:, 5:] + bx[:, 1:2] - 1
      bx = _bbreg(bx, reg)
      pick = nms(bx[:, :4], bx[:, 4], 0.7, "min")
      result.append(Detections(np.ascontiguousarray(bx[pick, :4]), bx[pick, 4],
                               np.stack([px, py], -1)[pick]))
    return result
