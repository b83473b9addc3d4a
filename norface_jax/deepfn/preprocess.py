"""DeepFN pre-processing: resize, grayscale and histogram equalization (pure jnp).

Histogram equalization follows OpenCV's `equalizeHist` on 8-bit gray values g:
lut(g) = round((cdf(g) - cdf_min) * 255 / (N - cdf_min)), cdf_min the count of the
darkest present value and N the pixel count; a constant image is left unchanged.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma, as OpenCV's RGB2GRAY.


def to_gray(images: jax.Array) -> jax.Array:
  """uint8 (..., H, W, 3) RGB -> uint8 (..., H, W) gray (rounded BT.601 luma)."""
  x = jnp.asarray(images, jnp.float32)
  gray = x @ jnp.asarray(GRAY_WEIGHTS, jnp.float32)
  return jnp.clip(jnp.round(gray), 0, 255).astype(jnp.uint8)


def _equalize_one(gray_hw: jax.Array) -> jax.Array:
  flat = gray_hw.reshape(-1).astype(jnp.int32)
  hist = jnp.zeros(256, jnp.int32).at[flat].add(1)
  cdf = jnp.cumsum(hist)
  total = flat.shape[0]
  cdf_min = jnp.min(jnp.where(hist > 0, cdf, total))
  denom = total - cdf_min
  lut = jnp.round((cdf - cdf_min) * 255.0 / jnp.maximum(denom, 1))
  lut = jnp.where(denom > 0, jnp.clip(lut, 0, 255), jnp.arange(256, dtype=jnp.float32))
  return lut.astype(jnp.uint8)[flat].reshape(gray_hw.shape)


def equalize_hist(gray: jax.Array) -> jax.Array:
  """Histogram equalization of uint8 gray images (..., H, W), each image on its own."""
  gray = jnp.asarray(gray, jnp.uint8)
  lead = gray.shape[:-2]
  flat = gray.reshape((-1,) + gray.shape[-2:])
  return jax.vmap(_equalize_one)(flat).reshape(lead + gray.shape[-2:])


def resize(images: jax.Array, size: int) -> jax.Array:
  """uint8 (B, H, W, C) -> uint8 (B, size, size, C), antialiased bilinear."""
  b, h, w, c = images.shape
  if (h, w) == (size, size):
    return images
  x = jax.image.resize(jnp.asarray(images, jnp.float32), (b, size, size, c), "linear",
                       antialias=True)
  return jnp.clip(jnp.round(x), 0, 255).astype(jnp.uint8)


def preprocess(images: jax.Array, size: int, histeq: bool = True) -> jax.Array:
  """uint8 RGB (B, H, W, 3) or gray (B, H, W, 1) -> float32 (B, size, size, 1) in [0, 1].

  The DeepFN input: resized, grayscale, histogram-equalized (paper sec. 3.1).
  """
  images = jnp.asarray(images)
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f"expected (B, H, W, 1|3) images, got {images.shape}")
  images = resize(images, size)
  gray = to_gray(images) if images.shape[-1] == 3 else images[..., 0].astype(jnp.uint8)
  if histeq:
    gray = equalize_hist(gray)
  return (gray.astype(jnp.float32) / 255.0)[..., None]


preprocess_jit = jax.jit(preprocess, static_argnums=(1, 2))
