"""Face geometry: identity + AU intensities + yaw -> part parameters and 68 landmarks.

Everything here is in the canonical face frame (B items, arrays of shape (B,)). The
renderer draws the parts from these parameters and maps the landmarks with the same
pose transform, so that pixels and landmarks always agree. Each AU moves only the parts
listed in docs/synthfacs.md.
"""

from __future__ import annotations

import numpy as np

from norface_jax.data import labels

# Depth of each part for the yaw approximation (features slide sideways with sin(yaw)).
DEPTH_EYES, DEPTH_NOSE, DEPTH_MOUTH = 0.18, 0.32, 0.22


def au_fractions(au: np.ndarray) -> dict[int, np.ndarray]:
  """AU intensities (B, 17) in 0..5 -> {au: fraction in 0..1 (B,)}."""
  a = np.clip(np.asarray(au, np.float32), 0, 5) / 5
  return {k: a[:, i] for i, k in enumerate(labels.SYNTH_AUS)}


def face_geometry(ident: dict[str, np.ndarray], au: np.ndarray, asym: np.ndarray,
                  yaw: np.ndarray) -> dict[str, np.ndarray]:
  """Part parameters of a batch of faces (all (B,) float32 unless noted)."""
  A = au_fractions(au)
  sy = np.sin(yaw).astype(np.float32)
  g: dict[str, np.ndarray] = {}
  g["face_w"] = ident["face_w"]
  g["face_bot"] = ident["face_len"] + 0.10 * A[26]
  g["jaw_taper"] = ident["jaw_taper"]
  g["hairline"] = ident["hairline"]

  # Eyes (index 0 = image-left, 1 = image-right).
  ev, ew, eh = ident["eye_v"], ident["eye_w"], ident["eye_h"]
  g["eye_v"], g["eye_w"] = ev, ew
  g["eye_u"] = np.stack([-ident["eye_dx"], ident["eye_dx"]]) + DEPTH_EYES * sy
  g["eye_up"] = eh * (1 + 1.0 * A[5] - 0.35 * A[7] - 0.15 * A[6] - 0.15 * A[4])
  g["eye_lo"] = eh * 0.8 * np.maximum(1 - 0.7 * A[7] - 0.55 * A[6], 0.12)
  g["iris_r"] = eh * 1.0
  g["cheek_v"] = ev + 0.24 - 0.09 * A[6]
  g["cheek_s"] = 0.15 + 0.7 * A[6]
  g["crow_s"] = A[6]
  g["lid_s"] = 0.25 + 0.6 * np.maximum(A[6], A[7])

  # Brows: inner/mid/outer heights; sign of v is down.
  base = ev - ident["brow_gap"]
  g["brow_in_v"] = base + 0.01 - 0.15 * A[1] - 0.03 * A[2] + 0.10 * A[4]
  g["brow_mid_v"] = base - ident["brow_arch"] - 0.07 * A[1] - 0.10 * A[2] + 0.08 * A[4]
  g["brow_out_v"] = base + 0.03 - 0.01 * A[1] - 0.16 * A[2] + 0.05 * A[4]
  inner = ident["eye_dx"] - 1.05 * ew - 0.02 + 0.06 * A[4]
  outer = ident["eye_dx"] + 1.25 * ew
  g["brow_in_u"] = np.stack([-inner, inner]) + DEPTH_EYES * sy
  g["brow_out_u"] = np.stack([-outer, outer]) + DEPTH_EYES * sy
  g["brow_th"] = ident["brow_th"] * (1 + 0.15 * A[4])
  g["glabella_s"] = A[4]
  g["forehead_in_s"] = A[1]
  g["forehead_out_s"] = A[2]
  g["brow_base"] = base

  # Nose.
  g["nose_u"] = DEPTH_NOSE * sy
  g["nose_top_v"] = ev
  g["nose_tip_v"] = ev + ident["nose_len"]
  g["nostril_v"] = g["nose_tip_v"] + 0.015 - 0.025 * A[9] - 0.01 * A[10]
  g["nose_w"] = ident["nose_w"] * (1 + 0.25 * A[9])
  g["nose_wrinkle_s"] = A[9]

  # Mouth: per side widths and corner heights (index 0 = image-left).
  side = np.stack([np.clip(1 - np.maximum(asym, 0), 0, 1), np.clip(1 + np.minimum(asym, 0), 0, 1)])
  mw = ident["mouth_w"] * (1 + 0.22 * A[20] - 0.10 * A[23] - 0.06 * A[24])
  g["mouth_u"] = DEPTH_MOUTH * sy
  g["mouth_v"] = ident["mouth_v"] - 0.02 * A[17]
  g["mouth_w"] = mw * (1 + side * (0.22 * A[12] - 0.14 * A[14]))
  g["corner_dy"] = (0.09 * A[15] + 0.02 * A[20]
                    - side * (0.085 * A[12] + 0.03 * A[14]))
  thin = np.maximum(1 - 0.6 * A[23] - 0.45 * A[24] - 0.25 * A[20], 0.15)
  g["lip_up"] = ident["lip_up"] * thin
  g["lip_lo"] = ident["lip_lo"] * thin
  g["lip_raise"] = 0.05 * A[10] + 0.02 * A[9]
  close = 1 - A[24]
  g["open_up"] = (0.028 * A[25] + 0.03 * A[10] + 0.012 * A[26]) * close
  g["open_lo"] = (0.028 * A[25] + 0.16 * A[26]) * close
  g["lip_pale"] = 0.45 * A[23]
  g["press_s"] = A[24]
  g["dimple_s"] = side * A[14]
  g["nasolabial_s"] = 0.15 + 0.65 * A[10] + 0.2 * A[9] + 0.15 * A[12]
  g["chin_s"] = A[17]
  g["chin_lift"] = 0.03 * A[17]
  return {k: np.asarray(v, np.float32) for k, v in g.items()}


def jaw_point(g: dict[str, np.ndarray], psi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Point of the face outline at angle psi (0 = right, pi/2 = chin)."""
  b = np.where(np.sin(psi) < 0, 0.95, g["face_bot"][:, None])
  v = b * np.sin(psi)
  a = g["face_w"][:, None] * (1 - g["jaw_taper"][:, None] * np.clip(v, 0, None) ** 2)
  return a * np.cos(psi), v


def mouth_curves(g: dict[str, np.ndarray], s: np.ndarray, side: np.ndarray):
  """Mouth curves at normalised abscissa s in [-1, 1] (side 0 = left, 1 = right).

  Returns (v of mouth line, top of upper lip, top of opening, bottom of opening,
  bottom of lower lip), each shaped like s; g entries must broadcast against s.
  """
  cdy = np.where(side, g["corner_dy_r"], g["corner_dy_l"])
  base = np.clip(1 - s * s, 0, None)
  prof = 1.5 * base - 0.5 * base * base
  vm = g["mouth_v_b"] + cdy * s * s
  top_open = vm - (g["open_up_b"] + g["lip_raise_b"] * 0.4) * base
  bot_open = vm + g["open_lo_b"] * base
  top_lip = top_open - g["lip_up_b"] * prof - g["lip_raise_b"] * 0.6 * base
  bot_lip = bot_open + g["lip_lo_b"] * prof - g["chin_lift_b"] * base
  return vm, top_lip, top_open, bot_open, bot_lip


def _bcast(g: dict[str, np.ndarray], shape_tail: int) -> dict[str, np.ndarray]:
  """Adds '<key>_b' entries broadcastable against (B, *tail) for mouth_curves."""
  ex = (slice(None),) + (None,) * shape_tail
  out = dict(g)
  for k in ("mouth_v", "open_up", "open_lo", "lip_up", "lip_lo", "lip_raise", "chin_lift"):
    out[k + "_b"] = g[k][ex]
  out["corner_dy_l"] = g["corner_dy"][0][ex]
  out["corner_dy_r"] = g["corner_dy"][1][ex]
  return out


def brow_curve(g: dict[str, np.ndarray], i: int, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Centre line of brow i at parameter t in [0, 1] (0 = inner end); g broadcast to t."""
  u = g["brow_in_u"][i] + (g["brow_out_u"][i] - g["brow_in_u"][i]) * t
  v = (g["brow_in_v"] * (1 - t) ** 2 + 2 * g["brow_mid_v"] * t * (1 - t)
       + g["brow_out_v"] * t ** 2)
  return u, v


def landmarks(g: dict[str, np.ndarray]) -> np.ndarray:
  """iBUG-68 landmarks (B, 68, 2) in the canonical frame."""
  B = g["face_w"].shape[0]
  pts = np.zeros((B, 68, 2), np.float32)
  psi = np.linspace(np.pi + 0.25, -0.25, 17, dtype=np.float32)[None]
  pts[:, 0:17, 0], pts[:, 0:17, 1] = jaw_point(g, psi)
  gb = {k: (v[:, None] if v.ndim == 1 else v[:, :, None]) for k, v in g.items()}
  t = np.linspace(0.0, 1.0, 5, dtype=np.float32)[None]
  u, v = brow_curve(gb, 0, t[:, ::-1])  # 17..21: image-left brow, outer -> inner.
  pts[:, 17:22, 0], pts[:, 17:22, 1] = u, v
  u, v = brow_curve(gb, 1, t)  # 22..26: image-right brow, inner -> outer.
  pts[:, 22:27, 0], pts[:, 22:27, 1] = u, v
  # Nose bridge 27..30, lower nose 31..35.
  f = np.linspace(0, 1, 4, dtype=np.float32)[None]
  nu, top, tip = g["nose_u"][:, None], g["nose_top_v"][:, None], g["nose_tip_v"][:, None]
  pts[:, 27:31, 0] = nu * (0.5 + 0.5 * f)
  pts[:, 27:31, 1] = top + (tip - top) * f
  k = np.array([-1, -0.5, 0, 0.5, 1], np.float32)[None]
  pts[:, 31:36, 0] = nu + k * g["nose_w"][:, None] * 0.55
  pts[:, 31:36, 1] = g["nostril_v"][:, None] + 0.02 * (1 - np.abs(k))
  # Eyes 36..41 (image-left), 42..47 (image-right).
  c = np.array([-1, -0.4, 0.4, 1, 0.4, -0.4], np.float32)
  for i, start, order in ((0, 36, c), (1, 42, -c)):
    cu = g["eye_u"][i][:, None]
    s = order[None]
    base = 1 - s * s
    up = np.array([0, 1, 1, 0, 0, 0], np.float32)[None]
    h = np.where(up > 0, -g["eye_up"][:, None], g["eye_lo"][:, None])
    pts[:, start:start + 6, 0] = cu + g["eye_w"][:, None] * s
    pts[:, start:start + 6, 1] = g["eye_v"][:, None] + h * base
  # Mouth: outer 48..59, inner 60..67.
  gm = _bcast(g, 1)
  so = np.array([-1, -0.66, -0.3, 0, 0.3, 0.66, 1, 0.66, 0.3, 0, -0.3, -0.66], np.float32)[None]
  vm, tl, to, bo, bl = mouth_curves(gm, so, so > 0)
  lower = np.arange(12)[None] > 6
  mu, mw = g["mouth_u"][:, None], np.where(so > 0, g["mouth_w"][1][:, None], g["mouth_w"][0][:, None])
  pts[:, 48:60, 0] = mu + so * mw
  pts[:, 48:60, 1] = np.where(lower, bl, tl)
  pts[:, 48, 1], pts[:, 54, 1] = vm[:, 0], vm[:, 6]
  si = np.array([-1, -0.5, 0, 0.5, 1, 0.5, 0, -0.5], np.float32)[None]
  vm, tl, to, bo, bl = mouth_curves(gm, si * 0.92, si > 0)
  lower = np.arange(8)[None] > 4
  mw = np.where(si > 0, g["mouth_w"][1][:, None], g["mouth_w"][0][:, None])
  pts[:, 60:68, 0] = mu + si * 0.92 * mw
  pts[:, 60:68, 1] = np.where(lower, bo, to)
  return pts


def brow_params(g: dict[str, np.ndarray]) -> np.ndarray:
  """Eyebrow parameters (B, 4): inner and outer height above the eye centre, left then right.

  Brows are drawn symmetric, so left and right agree; kept as 4 for the usual layout.
  These heights mix identity (brow gap, resting look-alikes) and expression; the
  renderer's `brows` label is their difference to the person's resting face.
  """
  inner = g["eye_v"] - g["brow_in_v"]
  outer = g["eye_v"] - g["brow_out_v"]
  return np.stack([inner, outer, inner, outer], axis=1).astype(np.float32)
