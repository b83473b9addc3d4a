"""Pose and scene sampling for the two domains, and the public batch `render` call.

Domain 0 "lab": plain background, even light, near-frontal pose (BP4D, DISFA).
Domain 1 "wild": textured background, light gradient, colour cast, blur, noise and
wider pose (AffectNet, RAF-DB). The difference is the cross-dataset shift.
"""

from __future__ import annotations

import numpy as np

from norface_jax.data.synthfacs import raster

LAB, WILD = 0, 1
DOMAINS = ("lab", "wild")


def sample_pose(rng: np.random.Generator, domain: int) -> dict[str, np.ndarray]:
  """One pose (arrays with a leading axis of 1): roll, yaw (radians), scale, shift."""
  if domain == LAB:
    roll, yaw = rng.normal(0, 0.05), rng.normal(0, 0.1)
    scale, shift = rng.uniform(0.92, 1.04), rng.normal(0, 0.015, 2)
  else:
    roll, yaw = rng.normal(0, 0.13), rng.normal(0, 0.22)
    scale, shift = rng.uniform(0.8, 1.08), rng.normal(0, 0.04, 2)
  return {"roll": np.float32([np.clip(roll, -0.35, 0.35)]),
          "yaw": np.float32([np.clip(yaw, -0.5, 0.5)]),
          "scale": np.float32([scale]), "shift": np.float32(np.clip(shift, -0.1, 0.1))[None]}


def frontal_pose(n: int) -> dict[str, np.ndarray]:
  """n upright, centred, frontal poses."""
  return {"roll": np.zeros(n, np.float32), "yaw": np.zeros(n, np.float32),
          "scale": np.ones(n, np.float32), "shift": np.zeros((n, 2), np.float32)}


def sample_scene(rng: np.random.Generator, domain: int) -> dict[str, np.ndarray]:
  """Background, light and camera degradations for one image (leading axis of 1)."""
  if domain == LAB:
    grey = rng.uniform(0.55, 0.8)
    bg = np.float32([grey, grey, grey]) * rng.uniform(0.95, 1.05, 3)
    s = dict(bg_rgb=bg, bg2_rgb=bg, tex_freq=np.float32([1, 1]), tex_phase=np.float32([0, 0]),
             tex_s=0.0, light_dir=0.0, light_s=0.0, cast=np.float32([1, 1, 1]), blur=0.0,
             noise_s=0.0)
  else:
    s = dict(bg_rgb=rng.uniform(0.05, 0.95, 3), bg2_rgb=rng.uniform(0.05, 0.95, 3),
             tex_freq=rng.uniform(1.0, 7.0, 2) * rng.choice([-1, 1], 2),
             tex_phase=rng.uniform(0, 2 * np.pi, 2), tex_s=rng.uniform(0.5, 1.0),
             light_dir=rng.uniform(0, 2 * np.pi), light_s=rng.uniform(0.3, 0.9),
             cast=rng.uniform(0.85, 1.15, 3), blur=float(rng.uniform() < 0.6) * rng.uniform(0.3, 1.0),
             noise_s=rng.uniform(0.01, 0.05))
  s["domain"] = domain
  s["noise_seed"] = int(rng.integers(2**31))
  out = {k: np.asarray(v, np.float32)[None] for k, v in s.items()}
  out["domain"] = out["domain"].astype(np.int32)
  out["noise_seed"] = out["noise_seed"].astype(np.int64)
  return out


def stack(items: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  """Concatenates pose or scene dicts along the batch axis."""
  return {k: np.concatenate([d[k] for d in items]) for k in items[0]}


def render(identity_params: dict[str, np.ndarray], au_intensities: np.ndarray,
           pose: dict[str, np.ndarray] | None = None, domain: int | np.ndarray = LAB,
           size: int = 112, rng: np.random.Generator | None = None,
           asym: np.ndarray | None = None, scene: dict[str, np.ndarray] | None = None,
           identity_bias: float = 1.0) -> dict[str, np.ndarray]:
  """Renders B faces: identities (dict of (B, ...)) with AU intensities (B, 17) in 0..5.

  pose: None = frontal; domain: one int or (B,) ints, used to sample scenes from `rng`
  when `scene` is not given. For "target face" renders and identity swaps, pair any
  identities (`identity.take`) with any AU vectors. Returns image uint8 (B,S,S,3),
  landmarks float32 (B,68,2) in pixels, brows float32 (B,4).
  """
  au = np.asarray(au_intensities, np.float32)
  n = len(au)
  if not 64 <= size <= 256:
    raise ValueError(f"size {size} outside 64..256")
  if pose is None:
    pose = frontal_pose(n)
  if scene is None:
    rng = rng if rng is not None else np.random.default_rng(0)
    doms = np.broadcast_to(np.asarray(domain), (n,))
    scene = stack([sample_scene(rng, int(d)) for d in doms])
  if asym is None:
    asym = np.zeros(n, np.float32)
  return raster.render_batch(identity_params, au, np.asarray(asym, np.float32), pose,
                                 scene, size, identity_bias)
