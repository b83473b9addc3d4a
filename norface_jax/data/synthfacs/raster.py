"""Vectorised NumPy renderer: a batch of faces (B, H, W, 3) at once.

Parts are signed-distance fields in the canonical face frame; the pose is an affine map
of the sampling grid, so landmarks (mapped with the same affine) agree with the pixels.
Head, hair and background are drawn over the full canvas; the small parts (eyes, brows,
nose, mouth) only inside per-face windows gathered from and scattered back into the
canvas, which keeps the cost near that of drawing the head alone.
"""

from __future__ import annotations

import numpy as np

from norface_jax.data.synthfacs import geometry

CANVAS_HALF = 1.12  # canonical units from canvas centre to edge at scale 1.
CHUNK = 8  # faces drawn together; keeps arrays cache-sized.
F32 = np.float32


def _b(x) -> np.ndarray:
  """(B,) -> (B, 1, 1) for broadcasting over a pixel grid."""
  return np.asarray(x, F32)[:, None, None]


def pose_affine(pose: dict[str, np.ndarray], size: int) -> tuple[np.ndarray, np.ndarray]:
  """Forward affine canonical -> pixel: p = M q + t; M (B, 2, 2), t (B, 2)."""
  roll, yaw = pose["roll"].astype(F32), pose["yaw"].astype(F32)
  k = size / 2 / CANVAS_HALF * pose["scale"].astype(F32)
  cx = 0.8 + 0.2 * np.cos(yaw)  # horizontal foreshortening of a turned head.
  c, s = np.cos(roll), np.sin(roll)
  M = np.stack([np.stack([c * cx, -s], -1), np.stack([s * cx, c], -1)], 1) * k[:, None, None]
  t = size / 2 + pose["shift"].astype(F32) * size
  return M.astype(F32), t.astype(F32)


def to_pixels(points: np.ndarray, M: np.ndarray, t: np.ndarray) -> np.ndarray:
  """Canonical points (B, N, 2) -> pixel coordinates (x right, y down; pixel centres at +0.5)."""
  return (np.einsum("bij,bnj->bni", M, points) + t[:, None]).astype(F32)


class _Layer:
  """A pixel region of the batch: full canvas or one window per face, with its grid."""

  def __init__(self, img, Minv, t, k, y0=None, x0=None, h=None, w=None):
    self.img = img
    _, B, H, W = img.shape  # planar (3, B, H, W): per-channel ops stay contiguous.
    self.window = y0 is not None
    if not self.window:
      y0, x0, h, w = np.zeros(B, int), np.zeros(B, int), H, W
    self.iy = (y0[:, None] + np.arange(h)[None])[:, :, None]  # (B, h, 1)
    self.ix = (x0[:, None] + np.arange(w)[None])[:, None, :]  # (B, 1, w)
    self.bi = np.arange(B)[:, None, None]
    py, px = (self.iy + 0.5 - t[:, 1, None, None]).astype(F32), (self.ix + 0.5 - t[:, 0, None, None]).astype(F32)
    self.U = _b(Minv[:, 0, 0]) * px + _b(Minv[:, 0, 1]) * py
    self.V = _b(Minv[:, 1, 0]) * px + _b(Minv[:, 1, 1]) * py
    self.k = _b(k)  # pixels per canonical unit (for 1-pixel soft edges).
    self.buf = img[:, self.bi, self.iy, self.ix] if self.window else img

  def cover(self, d: np.ndarray) -> np.ndarray:
    """Antialiased coverage from a signed distance (negative inside)."""
    return np.clip(0.5 - d * self.k, 0, 1)

  def paint(self, alpha: np.ndarray, rgb: np.ndarray) -> None:
    """Alpha-blends a (B, 3) colour into the region."""
    rgb = np.asarray(rgb, F32)
    for c in range(3):
      ch = self.buf[c]
      ch += alpha * (rgb[:, c, None, None] - ch)

  def shade(self, factor: np.ndarray) -> None:
    """Multiplies the region by a (broadcastable) brightness factor."""
    self.buf *= factor

  def commit(self) -> None:
    if self.window:
      self.img[:, self.bi, self.iy, self.ix] = self.buf


def _ellipse(L: _Layer, cu, cv, a, b) -> tuple[np.ndarray, np.ndarray]:
  """Approximate signed distance to an ellipse, and its normalised squared radius."""
  du, dv = (L.U - _b(cu)) / _b(a), (L.V - _b(cv)) / _b(b)
  r2 = du * du + dv * dv
  # (r2 - 1) / 2 equals sqrt(r2) - 1 to first order at the edge, where it matters.
  return (r2 - 1) * _b(0.5 * np.minimum(a, b)), r2


def _segment(L: _Layer, p0u, p0v, p1u, p1v) -> np.ndarray:
  """Distance to a segment (all endpoints (B,))."""
  du, dv = _b(p1u - p0u), _b(p1v - p0v)
  qu, qv = L.U - _b(p0u), L.V - _b(p0v)
  h = np.clip((qu * du + qv * dv) / (du * du + dv * dv + 1e-8), 0, 1)
  qu -= du * h
  qv -= dv * h
  return np.sqrt(qu * qu + qv * qv)


def _line(L: _Layer, dist: np.ndarray, half_width: float) -> np.ndarray:
  """Coverage of a stroke at distance `dist`, at least about one pixel wide."""
  return np.clip((half_width - dist) * L.k + 0.6, 0, 1)


def _window(img, Minv, M, t, k, center_u, center_v, half, size):
  """A square window of canonical half-size `half` around a per-face centre."""
  c = np.einsum("bij,bj->bi", M, np.stack([center_u, center_v], -1)) + t
  ext = half * np.max(np.abs(M).sum(2), axis=1)  # pixel half-extent per face.
  n = int(min(size, np.ceil(2 * ext.max()) + 2))
  y0 = np.clip(np.floor(c[:, 1] - n / 2).astype(int), 0, size - n)
  x0 = np.clip(np.floor(c[:, 0] - n / 2).astype(int), 0, size - n)
  return _Layer(img, Minv, t, k, y0, x0, n, n)


def _draw_head(L: _Layer, ident, g) -> None:
  """Neck, clothes, hair, ears, face and face shading over the full canvas."""
  skin, hair = ident["skin_rgb"], ident["hair_rgb"]
  fw = g["face_w"]
  B = fw.shape[0]
  one = np.ones(B, F32)
  d, _ = _ellipse(L, 0 * one, 1.75 * one, 1.15 * one, 0.6 * one)
  L.paint(L.cover(d), ident["clothes_rgb"])
  neck = np.maximum(np.abs(L.U) - _b(fw * 0.5), _b(0.3 * one) - L.V)
  L.paint(L.cover(neck), skin * 0.78)
  long_hair = ident["hair_len"] > 0.5
  if long_hair.any():
    d, _ = _ellipse(L, 0 * one, 0.12 * one, fw + 0.2, 1.2 * one)
    L.paint(L.cover(d) * _b(long_hair), hair * 0.85)
  for side in (-1, 1):
    d, _ = _ellipse(L, side * fw * 0.98, -0.05 * one, 0.08 * one, 0.15 * one)
    L.paint(L.cover(d), skin * 0.88)
  # Face: ellipse with a tapering jaw; the jaw drop (AU26) lengthens the lower half.
  V = L.V
  below = np.clip(V, 0, None)
  a = _b(fw) * (1 - _b(g["jaw_taper"]) * below * below)
  b = np.where(V < 0, F32(0.95), _b(g["face_bot"]))
  du, dv = L.U / a, V / b
  r2 = du * du + dv * dv
  face = L.cover((r2 - 1) * _b(fw * 0.45))
  L.paint(face, skin)
  # Hair cap: inside an enlarged head, above a hairline that drops at the temples.
  d, _ = _ellipse(L, 0 * one, -0.02 * one, fw + 0.07, 1.04 * one)
  hl = _b(g["hairline"]) + 0.45 * (L.U / _b(fw)) ** 2
  L.paint(L.cover(np.maximum(d, V - hl)), hair)
  L.shade(1 - 0.16 * np.clip(r2, 0, 1) * face)


def _draw_eye(L: _Layer, ident, g, i: int) -> None:
  """Eye i: cheek, crow's feet, lids, white, iris, pupil."""
  cu, cv, ew = g["eye_u"][i], g["eye_v"], g["eye_w"]
  out = -1.0 if i == 0 else 1.0  # outward direction in u.
  d, r2 = _ellipse(L, cu + out * 0.02, g["cheek_v"], 0.13 + 0 * cv, 0.09 + 0 * cv)
  blush = np.clip(1 - r2, 0, 1) * _b(g["cheek_s"])
  L.paint(blush * 0.35, np.clip(ident["skin_rgb"] * [1.1, 0.85, 0.85], 0, 1))
  L.shade(1 + 0.12 * blush)
  du, dv = L.U - _b(cu), L.V - _b(cv)
  # Crow's feet (AU6): three short lines fanning out from the outer corner.
  x, y = out * du - _b(ew + 0.025), dv
  crow = 0
  for ang in (-0.45, 0.0, 0.45):
    along = x * np.cos(ang) + y * np.sin(ang)
    across = np.abs(-x * np.sin(ang) + y * np.cos(ang))
    crow = np.maximum(crow, _line(L, across, 0.006) * (along > 0) * (along < 0.065))
  L.shade(1 - 0.45 * crow * _b(g["crow_s"]))
  s = du / _b(ew)
  base = np.clip(1 - s * s, 0, None)
  up, lo = _b(g["eye_up"]) * base, _b(g["eye_lo"]) * base
  # Lower-lid bulge line (AU6/AU7 raise and tense the lower lid).
  bag = _line(L, np.abs(dv - lo - 0.028), 0.005) * (base > 0.1)
  L.shade(1 - 0.35 * bag * _b(g["lid_s"]))
  crease = _line(L, np.abs(dv + up + 0.03), 0.004) * (base > 0.15)
  L.shade(1 - 0.2 * crease)
  opening = L.cover(np.maximum(-up - dv, dv - lo)) * (base > 0)
  L.paint(opening, np.full((len(cu), 3), 0.93, F32))
  ir = g["iris_r"]
  d, _ = _ellipse(L, cu, cv + 0.05 * ir, ir, ir)
  L.paint(L.cover(d) * opening, ident["iris_rgb"])
  d, _ = _ellipse(L, cu, cv + 0.05 * ir, 0.45 * ir, 0.45 * ir)
  L.paint(L.cover(d) * opening, np.full((len(cu), 3), 0.03, F32))
  lid = _line(L, np.abs(dv + up), 0.007) * (base > 0) + _line(L, np.abs(dv - lo), 0.003) * (base > 0) * 0.5
  L.shade(1 - 0.7 * np.clip(lid, 0, 1))


def _draw_brow(L: _Layer, ident, g, i: int) -> None:
  """Brow i: a tapered quadratic band between its inner and outer end."""
  u_in, u_out = g["brow_in_u"][i], g["brow_out_u"][i]
  t = (L.U - _b(u_in)) / _b(u_out - u_in)
  vc = (_b(g["brow_in_v"]) * (1 - t) ** 2 + _b(2 * g["brow_mid_v"]) * t * (1 - t)
        + _b(g["brow_out_v"]) * t * t)
  th = _b(g["brow_th"]) * (1 - 0.45 * np.clip(t, 0, 1)) / 2
  length = _b(np.abs(u_out - u_in))
  d = np.maximum(np.abs(L.V - vc) - th, np.maximum(-t, t - 1) * length)
  L.paint(L.cover(d) * 0.95, ident["brow_rgb"])


def _draw_forehead(L: _Layer, g) -> None:
  """Horizontal forehead lines (AU1 centre, AU2 sides) and glabella lines (AU4)."""
  U, V = L.U, L.V
  base = _b(g["brow_base"])
  lines = 0
  for j in range(3):
    vj = base - 0.13 - 0.055 * j + 0.25 * U * U
    lines = np.maximum(lines, _line(L, np.abs(V - vj), 0.005))
  au = np.abs(U)
  w = (_b(g["forehead_in_s"]) * np.clip(1 - au / 0.2, 0, 1)
       + _b(g["forehead_out_s"]) * np.clip((au - 0.05) / 0.15, 0, 1) * (au < 0.42))
  L.shade(1 - 0.55 * lines * np.clip(w, 0, 1))
  glab = 0
  for side in (-1, 1):
    dist = np.abs(U - side * 0.03 - _b(g["nose_u"] * 0.5))
    glab = np.maximum(glab, _line(L, dist, 0.005) * (V > base - 0.05) * (V < base + 0.06))
  L.shade(1 - 0.5 * glab * _b(g["glabella_s"]))


def _draw_nose(L: _Layer, ident, g) -> None:
  """Nose: side shadow, tip, wings, nostrils and AU9 wrinkles on the bridge."""
  nu, nw, tip, nv = g["nose_u"], g["nose_w"], g["nose_tip_v"], g["nostril_v"]
  top = g["nose_top_v"]
  side = _segment(L, nu - 0.045, top + 0.06, nu - nw * 0.6, nv - 0.03)
  L.shade(1 - 0.18 * _line(L, side, 0.012))
  d, r2 = _ellipse(L, nu, tip - 0.005, nw * 0.45, 0.045 + 0 * nw)
  L.shade(1 + 0.08 * np.clip(1 - r2, 0, 1))
  for s in (-1, 1):
    d, _ = _ellipse(L, nu + s * nw * 0.62, nv - 0.01, 0.045 + 0 * nw, 0.035 + 0 * nw)
    L.shade(1 - 0.35 * _line(L, np.abs(d), 0.004) * (L.V > _b(nv - 0.03)))
    d, _ = _ellipse(L, nu + s * nw * 0.35, nv + 0.004, 0.03 + 0 * nw, 0.013 + 0 * nw)
    L.paint(L.cover(d), ident["skin_rgb"] * 0.3)
  wr = 0
  for j in range(3):
    vj = top + 0.07 + 0.035 * j
    wr = np.maximum(wr, _line(L, np.abs(L.V - _b(vj) + 0.3 * (L.U - _b(nu)) ** 2), 0.004)
                    * (np.abs(L.U - _b(nu)) < 0.07))
  L.shade(1 - 0.5 * wr * _b(g["nose_wrinkle_s"]))


def _draw_mouth(L: _Layer, ident, g) -> None:
  """Mouth region: nasolabial folds, dimples, chin, lips, opening and teeth."""
  B = len(g["mouth_v"])
  U, V = L.U, L.V
  mu = _b(g["mouth_u"])
  gm = geometry._bcast(g, 2)  # pylint: disable=protected-access
  right = U > mu
  mw = np.where(right, _b(g["mouth_w"][1]), _b(g["mouth_w"][0]))
  s = (U - mu) / mw
  vm, top_lip, top_open, bot_open, bot_lip = geometry.mouth_curves(gm, s, right)
  # Nasolabial folds (AU10 mostly) from the nose wings to beyond the mouth corners.
  fold = 0
  for i, sg in ((0, -1), (1, 1)):
    p0u = g["nose_u"] + sg * (g["nose_w"] * 0.9 + 0.01)
    p1u = g["mouth_u"] + sg * (g["mouth_w"][i] + 0.05)
    dist = _segment(L, p0u, g["nostril_v"] - 0.01, p1u, g["mouth_v"] + g["corner_dy"][i] + 0.06)
    fold = np.maximum(fold, _line(L, dist, 0.006))
  L.shade(1 - 0.5 * fold * _b(np.clip(g["nasolabial_s"], 0, 1)))
  # Lip pressor bulge: pale skin above and below the pressed lips (AU24).
  d, r2 = _ellipse(L, g["mouth_u"], g["mouth_v"], np.maximum(g["mouth_w"][0], g["mouth_w"][1]) * 1.1,
                   0.1 + 0 * mu[:, 0, 0])
  L.shade(1 + 0.15 * np.clip(1 - r2, 0, 1) * _b(g["press_s"]))
  # Dimples (AU14) just outside each corner.
  dimple = 0
  for i, sg in ((0, -1), (1, 1)):
    cu = g["mouth_u"] + sg * (g["mouth_w"][i] + 0.035)
    d, _ = _ellipse(L, cu, g["mouth_v"] + g["corner_dy"][i], 0.012 + 0 * cu, 0.03 + 0 * cu)
    dimple = np.maximum(dimple, L.cover(d) * _b(g["dimple_s"][i]))
  L.shade(1 - 0.5 * dimple)
  # Chin boss (AU17): a crease under the lower lip and a dimpled chin.
  crease_v = _b(g["mouth_v"] + g["open_lo"] + g["lip_lo"] + 0.075 - 0.035 * g["chin_s"])
  crease = _line(L, np.abs(V - crease_v - 1.5 * (U - mu) ** 2), 0.006) * (np.abs(U - mu) < 0.13)
  L.shade(1 - (0.12 + 0.45 * _b(g["chin_s"])) * crease)
  d, r2 = _ellipse(L, g["mouth_u"], g["mouth_v"] + g["open_lo"] + g["lip_lo"] + 0.16, 0.12 + 0 * mu[:, 0, 0],
                   0.07 + 0 * mu[:, 0, 0])
  bumps = (np.sin(U * 95) * np.sin(V * 95) > 0.3) * np.clip(1 - r2, 0, 1)
  L.shade(1 - 0.3 * bumps * _b(g["chin_s"]))
  # Lips, opening, teeth.
  inside = np.abs(s) < 1
  lips = L.cover(np.maximum(top_lip - V, V - bot_lip)) * inside
  lip_rgb = ident["lip_rgb"] + (ident["skin_rgb"] - ident["lip_rgb"]) * g["lip_pale"][:, None]
  L.paint(lips, lip_rgb)
  L.shade(1 + 0.08 * lips * (V > vm))
  opening = L.cover(np.maximum(top_open - V, V - bot_open)) * inside
  L.paint(opening, np.tile(np.array([[0.25, 0.07, 0.07]], F32), (B, 1)))
  teeth = opening * (V < top_open + 0.035)
  L.paint(teeth, np.full((B, 3), 0.92, F32))
  line = _line(L, np.abs(V - vm), 0.003 + 0.004 * _b(g["press_s"])) * inside
  L.shade(1 - 0.45 * line)


NOISE_BANK = 640
_NOISE: list[np.ndarray] = []


def _noise_bank() -> np.ndarray:
  """Fixed unit Gaussian noise (3, 640, 640), made once per process from seed 0."""
  if not _NOISE:
    _NOISE.append(np.random.default_rng(0).standard_normal((3, NOISE_BANK, NOISE_BANK), F32))
  return _NOISE[0]


def _post(img: np.ndarray, scene: dict[str, np.ndarray], size: int) -> None:
  """Wild-domain light gradient, colour cast, blur and noise (the lab stays clean)."""
  wild = np.nonzero(scene["domain"] == 1)[0]
  if not len(wild):
    return
  sub = img[:, wild]
  yy = (np.arange(size, dtype=F32) / size - 0.5)
  a = scene["light_dir"][wild].astype(F32)
  grad = _b(np.cos(a)) * yy[None, None, :] + _b(np.sin(a)) * yy[None, :, None]
  sub *= 1 + _b(scene["light_s"][wild]) * grad
  sub *= scene["cast"][wild].T[:, :, None, None]
  blur = np.clip(scene["blur"][wild], 0, 1).astype(F32)[None, :, None, None]
  sm = sub.copy()
  sm[:, :, 1:-1] = (sub[:, :, :-2] + sub[:, :, 1:-1] + sub[:, :, 2:]) / 3
  sm2 = sm.copy()
  sm2[:, :, :, 1:-1] = (sm[:, :, :, :-2] + sm[:, :, :, 1:-1] + sm[:, :, :, 2:]) / 3
  sub += (sm2 - sub) * blur
  bank = _noise_bank()
  for j, b in enumerate(wild):  # a per-image crop of a fixed noise bank: cheap, deterministic.
    seed = int(scene["noise_seed"][b])
    y, x = seed % (NOISE_BANK - size), (seed // NOISE_BANK) % (NOISE_BANK - size)
    sub[:, j] += bank[:, y:y + size, x:x + size] * scene["noise_s"][b]
  img[:, wild] = sub


def _background(img: np.ndarray, scene: dict[str, np.ndarray], size: int) -> None:
  """Plain colour (lab) or a separable sinusoid texture between two colours (wild)."""
  c0 = scene["bg_rgb"].astype(F32)
  img[:] = c0.T[:, :, None, None]
  wild = np.nonzero(scene["tex_s"] > 0)[0]
  if not len(wild):
    return
  c1 = scene["bg2_rgb"][wild].astype(F32)
  x = np.arange(size, dtype=F32) / size * 2 * np.pi
  f, ph = scene["tex_freq"][wild].astype(F32), scene["tex_phase"][wild].astype(F32)
  fx, fy = f[:, 0:1], f[:, 1:2]
  ax, ay = fx * x[None] + ph[:, 0:1], fy * x[None] + ph[:, 1:2]
  # sin(ax + ay) = sin(ax) cos(ay) + cos(ax) sin(ay): outer products, no per-pixel sin.
  t = (np.sin(ay)[:, :, None] * np.cos(ax)[:, None, :] + np.cos(ay)[:, :, None] * np.sin(ax)[:, None, :])
  bx, by = 2.3 * fx * x[None] + ph[:, 1:2], 1.7 * fy * x[None] + ph[:, 0:1]
  t = t + np.sin(by)[:, :, None] * np.sin(bx)[:, None, :]
  mix = np.clip(0.5 + 0.25 * t, 0, 1) * _b(scene["tex_s"][wild])
  img[:, wild] += mix[None] * (c1 - c0[wild]).T[:, :, None, None]


def render_batch(ident: dict[str, np.ndarray], au: np.ndarray, asym: np.ndarray,
                 pose: dict[str, np.ndarray], scene: dict[str, np.ndarray], size: int,
                 identity_bias: float = 1.0) -> dict[str, np.ndarray]:
  """Draws B faces; returns image uint8 (B,S,S,3), landmarks (B,68,2) px, brows (B,4)
  (the eyebrow expression channels: inner/outer brow raise over the resting face).

  The identity's resting AU look-alikes are added to the drawn AUs (times
  identity_bias); labels stay the true AUs.
  """
  out = {"image": [], "landmarks": [], "brows": []}
  n = len(au)
  for lo in range(0, n, CHUNK):
    sl = slice(lo, min(n, lo + CHUNK))
    part = {k: v[sl] for k, v in ident.items()}
    res = _render_chunk(part, au[sl], asym[sl], {k: v[sl] for k, v in pose.items()},
                        {k: v[sl] for k, v in scene.items()}, size, identity_bias)
    for k in out:
      out[k].append(res[k])
  return {k: np.concatenate(v) for k, v in out.items()}


def _render_chunk(ident, au, asym, pose, scene, size, identity_bias):
  rest = np.clip(identity_bias * ident["rest_aus"], 0, 5)
  drawn = np.clip(au + rest, 0, 5)
  g = geometry.face_geometry(ident, drawn, np.asarray(asym, F32), pose["yaw"].astype(F32))
  # The person's resting face: what a 3DMM calls identity shape, so `brows` (its
  # expression blendshape channels) is the brow movement the AUs add to it.
  g_rest = geometry.face_geometry(ident, rest, np.asarray(asym, F32), pose["yaw"].astype(F32))
  M, t = pose_affine(pose, size)
  Minv = np.linalg.inv(M).astype(F32)
  k = np.sqrt(np.abs(np.linalg.det(M))).astype(F32)
  B = len(au)
  img = np.empty((3, B, size, size), F32)
  _background(img, scene, size)
  full = _Layer(img, Minv, t, k)
  _draw_head(full, ident, g)
  win = lambda cu, cv, half: _window(img, Minv, M, t, k, cu, cv, half, size)
  L = win(g["nose_u"] * 0.5, g["brow_base"] - 0.1, 0.3)
  _draw_forehead(L, g)
  L.commit()
  for i in (0, 1):
    L = win(g["eye_u"][i], g["eye_v"] + 0.08, 0.26)
    _draw_eye(L, ident, g, i)
    L.commit()
    cu = (g["brow_in_u"][i] + g["brow_out_u"][i]) / 2
    L = win(cu, g["brow_mid_v"], 0.19)
    _draw_brow(L, ident, g, i)
    L.commit()
  L = win(g["nose_u"], (g["nose_top_v"] + g["nostril_v"]) / 2, 0.25)
  _draw_nose(L, ident, g)
  L.commit()
  L = win(g["mouth_u"], g["mouth_v"] + 0.1, 0.42)
  _draw_mouth(L, ident, g)
  L.commit()
  _post(img, scene, size)
  np.clip(img, 0, 1, out=img)
  lm = to_pixels(geometry.landmarks(g), M, t)
  return {"image": (img.transpose(1, 2, 3, 0) * 255 + 0.5).astype(np.uint8), "landmarks": lm,
          "brows": geometry.brow_params(g) - geometry.brow_params(g_rest)}
