"""SynthFACS identities: morphology, appearance, groups and AU-lookalike resting offsets.

An identity is a dict of NumPy arrays with a leading batch axis (struct of arrays), so
that the renderer draws a whole batch of different people at once. All geometry is in
the canonical face frame (face centre at 0, x right, y down, face half-height ~1).
"""

from __future__ import annotations

import numpy as np

from norface_jax.data import labels

# AUs that a face can resemble at rest (low brows ~ AU4, downturned mouth ~ AU15, ...).
LOOKALIKE_AUS: tuple[int, ...] = (1, 2, 4, 7, 10, 12, 14, 15, 17, 24)
LOOKALIKE_PROB = 0.35  # chance that one identity carries each look-alike.
LOOKALIKE_RANGE = (1.0, 2.6)  # intensity-like size of a look-alike offset.

SKIN_LIGHT = np.array([[0.96, 0.80, 0.70], [0.90, 0.72, 0.60], [0.86, 0.68, 0.52]], np.float32)
SKIN_DARK = np.array([[0.66, 0.46, 0.34], [0.52, 0.35, 0.24], [0.40, 0.27, 0.19]], np.float32)
HAIR = np.array([[0.08, 0.06, 0.05], [0.25, 0.16, 0.09], [0.45, 0.30, 0.16],
                 [0.75, 0.60, 0.35], [0.55, 0.22, 0.10], [0.55, 0.55, 0.55]], np.float32)
IRIS = np.array([[0.25, 0.15, 0.08], [0.15, 0.30, 0.50], [0.25, 0.40, 0.25],
                 [0.10, 0.07, 0.05]], np.float32)

# Keys of an identity dict, with their per-item shape.
SCALAR_KEYS: tuple[str, ...] = (
    "gender", "skin", "face_w", "face_len", "jaw_taper", "eye_w", "eye_h", "eye_dx", "eye_v",
    "brow_th", "brow_gap", "brow_arch", "nose_len", "nose_w", "mouth_w", "mouth_v", "lip_up",
    "lip_lo", "hair_len", "hairline",
)
COLOR_KEYS: tuple[str, ...] = ("skin_rgb", "iris_rgb", "brow_rgb", "lip_rgb", "hair_rgb",
                               "clothes_rgb")


def sample_identity(rng: np.random.Generator, gender: int | None = None,
                    skin: int | None = None) -> dict[str, np.ndarray]:
  """One random identity (arrays with a leading axis of 1).

  gender: 1 = female morphology group, 0 = male (BP4D's F/M); skin: 0 lighter, 1 darker.
  """
  u = rng.uniform
  if gender is None:
    gender = int(rng.integers(2))
  if skin is None:
    skin = int(rng.integers(2))
  f = float(gender)
  tones = SKIN_DARK if skin else SKIN_LIGHT
  w = u(0, 1)
  k = min(int(w * 2), 1)
  skin_rgb = tones[k] * (1 - (w * 2 - k)) + tones[k + 1] * (w * 2 - k)
  skin_rgb = skin_rgb * u(0.96, 1.04, 3)
  hair_rgb = HAIR[rng.integers(len(HAIR))] * u(0.85, 1.15)
  if skin:  # darker skin groups get mostly dark hair.
    hair_rgb = HAIR[rng.integers(2)] * u(0.85, 1.15)
  lip = skin_rgb * np.array([0.80, 0.55, 0.55]) + np.array([0.12, 0.0, 0.02]) * (1 + f)
  p = dict(
      gender=gender, skin=skin,
      face_w=u(0.60, 0.68) + 0.06 * (1 - f) * u(0.5, 1.0),
      face_len=u(0.92, 1.08),
      jaw_taper=u(0.30, 0.50) - 0.15 * (1 - f),
      eye_w=u(0.10, 0.13),
      eye_h=u(0.045, 0.058) + 0.004 * f,
      eye_dx=u(0.25, 0.30),
      eye_v=u(-0.14, -0.06),
      brow_th=u(0.045, 0.060) + 0.02 * (1 - f) * u(0.5, 1.0),
      brow_gap=u(0.17, 0.23),
      brow_arch=u(0.0, 0.04) + 0.015 * f,
      nose_len=u(0.24, 0.34),
      nose_w=u(0.085, 0.13) + 0.015 * (1 - f),
      mouth_w=u(0.19, 0.26),
      mouth_v=u(0.44, 0.54),
      lip_up=u(0.026, 0.040) + 0.008 * f,
      lip_lo=u(0.034, 0.052) + 0.008 * f,
      hair_len=float(u() < (0.8 if gender else 0.12)),
      hairline=u(-0.78, -0.58) - 0.08 * (1 - f) * u(),
      skin_rgb=skin_rgb,
      iris_rgb=IRIS[rng.integers(len(IRIS))] * u(0.8, 1.2),
      brow_rgb=np.minimum(hair_rgb, skin_rgb * 0.3) * u(0.8, 1.0),
      lip_rgb=lip,
      hair_rgb=hair_rgb,
      clothes_rgb=u(0.1, 0.9, 3),
  )
  rest = np.zeros(len(labels.SYNTH_AUS), np.float32)
  for au in LOOKALIKE_AUS:
    if u() < LOOKALIKE_PROB:
      rest[labels.SYNTH_AUS.index(au)] = u(*LOOKALIKE_RANGE)
  out = {k: np.asarray([p[k]], np.float32) for k in SCALAR_KEYS}
  out["gender"] = out["gender"].astype(np.int32)
  out["skin"] = out["skin"].astype(np.int32)
  for key in COLOR_KEYS:
    out[key] = np.clip(np.asarray(p[key], np.float32), 0, 1)[None]
  out["rest_aus"] = rest[None]
  return out


def stack(identities: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  """Concatenates identity dicts along the batch axis."""
  return {k: np.concatenate([d[k] for d in identities]) for k in identities[0]}


def take(identity: dict[str, np.ndarray], index) -> dict[str, np.ndarray]:
  """Selects (and repeats) identities by batch index, e.g. for identity swaps."""
  index = np.asarray(index)
  return {k: v[index] for k, v in identity.items()}
