"""DeepFN augmentation: random affine transform plus a random grid warp (jit-able).

As in the faceswap code the paper builds on: the target is the affine-transformed
face, the input additionally goes through a smooth random warp, a 5x5 grid of control
points moved by Gaussian noise and interpolated to a dense displacement field, so the
autoencoder learns to denoise shape as well as compress appearance.

Shape letters: B batch, H/W image, G control grid.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax.scipy import ndimage


@dataclasses.dataclass(frozen=True)
class WarpConfig:
  """Augmentation ranges; all zeros make both outputs the input itself."""
  rotation_deg: float = 10.0   # uniform in +-rotation_deg.
  scale: float = 0.05          # zoom uniform in 1 +- scale.
  shift: float = 0.05          # translation uniform in +- shift * size.
  grid: int = 5                # control points per side.
  noise: float = 5.0 / 256     # std of the control-point noise, in image sizes.


def _sample(image_hw: jax.Array, rows: jax.Array, cols: jax.Array) -> jax.Array:
  """Bilinear sampling at (rows, cols) with edge clamping."""
  return ndimage.map_coordinates(image_hw, [rows, cols], order=1, mode="nearest")


def affine_coords(rng: jax.Array, size: int, cfg: WarpConfig) -> tuple[jax.Array, jax.Array]:
  """Source (rows, cols) (H, W) of a random rotation/zoom/shift about the centre."""
  k_rot, k_scale, k_shift = jax.random.split(rng, 3)
  angle = jnp.deg2rad(cfg.rotation_deg) * jax.random.uniform(k_rot, (), minval=-1, maxval=1)
  zoom = 1.0 + cfg.scale * jax.random.uniform(k_scale, (), minval=-1, maxval=1)
  shift = cfg.shift * size * jax.random.uniform(k_shift, (2,), minval=-1, maxval=1)
  centre = (size - 1) / 2.0
  r, c = jnp.meshgrid(jnp.arange(size, dtype=jnp.float32) - centre,
                      jnp.arange(size, dtype=jnp.float32) - centre, indexing="ij")
  cos, sin = jnp.cos(angle) / zoom, jnp.sin(angle) / zoom
  rows = cos * r - sin * c + centre - shift[0]
  cols = sin * r + cos * c + centre - shift[1]
  return rows, cols


def grid_displacement(rng: jax.Array, size: int, cfg: WarpConfig) -> jax.Array:
  """(2, H, W) smooth displacement in pixels: G x G Gaussian control offsets, upsampled."""
  ctrl = jax.random.normal(rng, (2, cfg.grid, cfg.grid)) * (cfg.noise * size)
  return jax.image.resize(ctrl, (2, size, size), "cubic")


def augment_one(rng: jax.Array, image_hwc: jax.Array,
                cfg: WarpConfig) -> tuple[jax.Array, jax.Array]:
  """One image (H, W, C) -> (warped input, affine-only target), both (H, W, C)."""
  size = image_hwc.shape[0]
  if image_hwc.shape[1] != size:
    raise ValueError(f"square images expected, got {image_hwc.shape}")
  k_aff, k_warp = jax.random.split(rng)
  rows, cols = affine_coords(k_aff, size, cfg)
  disp = grid_displacement(k_warp, size, cfg)
  # The warp moves points in the target frame, then the affine maps them to the source.
  r0, c0 = jnp.meshgrid(jnp.arange(size, dtype=jnp.float32),
                        jnp.arange(size, dtype=jnp.float32), indexing="ij")
  wr = jnp.clip(r0 + disp[0], 0, size - 1)
  wc = jnp.clip(c0 + disp[1], 0, size - 1)
  w_rows = _sample(rows, wr, wc)
  w_cols = _sample(cols, wr, wc)
  channels = jnp.moveaxis(image_hwc, -1, 0)
  target = jax.vmap(lambda im: _sample(im, rows, cols))(channels)
  warped = jax.vmap(lambda im: _sample(im, w_rows, w_cols))(channels)
  return jnp.moveaxis(warped, 0, -1), jnp.moveaxis(target, 0, -1)


def augment(rng: jax.Array, images_bhwc: jax.Array,
            cfg: WarpConfig = WarpConfig()) -> tuple[jax.Array, jax.Array]:
  """A batch (B, H, W, C) -> (warped inputs, targets), an independent draw per image."""
  keys = jax.random.split(rng, images_bhwc.shape[0])
  return jax.vmap(lambda k, im: augment_one(k, im, cfg))(keys, images_bhwc)
