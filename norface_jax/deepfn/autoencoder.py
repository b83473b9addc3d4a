"""The DeepFN autoencoder (paper tables 1-2): a shared encoder E and two decoders.

D_y reconstructs the template person, D_x the person being normalized; a face x is
normalized as D_y(E(x)). Widths follow the paper at `widths=(128, 256, 512, 1024)`,
`latent=1024`, 128x128 input; smaller widths and 64x64 input give CPU-sized twins.

PixelShuffle uses PyTorch's channel order (out[h*r+i, w*r+j, c] = in[h, w, c*r*r +
i*r + j]) so a PyTorch twin is `nn.PixelShuffle` after a transposed conv weight.
Parameter names: encoder/{conv_0..3, dense_latent, dense_project, upscale/conv},
decoder_{x,y}/{upscale_0..3/conv, output}.

Shape letters: B batch, H/W spatial, C channels, R upscale factor.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

LEAKY_SLOPE = 0.1  # faceswap's LeakyReLU(0.1).


def pixel_shuffle(x_bhwc: jax.Array, r: int = 2) -> jax.Array:
  """(B, H, W, C*R*R) -> (B, H*R, W*R, C), PyTorch `nn.PixelShuffle` channel order."""
  b, h, w, crr = x_bhwc.shape
  if crr % (r * r):
    raise ValueError(f"{crr} channels not divisible by r*r={r * r}")
  c = crr // (r * r)
  x = x_bhwc.reshape(b, h, w, c, r, r)
  x = x.transpose(0, 1, 4, 2, 5, 3)  # b, h, i, w, j, c
  return x.reshape(b, h * r, w * r, c)


class Upscale(nn.Module):
  """Conv 3x3 to 4*filters + LeakyReLU + PixelShuffle(2): (H, W) -> (2H, 2W, filters)."""
  filters: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(self.filters * 4, (3, 3), padding="SAME", dtype=self.dtype, name="conv")(x)
    return pixel_shuffle(nn.leaky_relu(x, LEAKY_SLOPE), 2)


class Encoder(nn.Module):
  """Table 1: 4 strided 5x5 convs, Dense latent, Dense to (S/32)^2 x C, Upscale."""
  widths: Sequence[int] = (128, 256, 512, 1024)
  latent: int = 1024
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x_bhwc):
    size = x_bhwc.shape[1]
    if size % 32 or x_bhwc.shape[2] != size:
      raise ValueError(f"square input with a side divisible by 32 expected, got {x_bhwc.shape}")
    x = x_bhwc.astype(self.dtype)
    for i, w in enumerate(self.widths):
      x = nn.leaky_relu(nn.Conv(w, (5, 5), strides=2, padding="SAME", dtype=self.dtype,
                                name=f"conv_{i}")(x), LEAKY_SLOPE)
    x = x.reshape(x.shape[0], -1)
    x = nn.Dense(self.latent, dtype=self.dtype, name="dense_latent")(x)
    s0 = size // 32
    x = nn.Dense(s0 * s0 * self.widths[-1], dtype=self.dtype, name="dense_project")(x)
    x = x.reshape(x.shape[0], s0, s0, self.widths[-1])
    return Upscale(self.widths[-1] // 2, dtype=self.dtype, name="upscale")(x)


class Decoder(nn.Module):
  """Table 2: four Upscale stages (widths[::-1] / 4) and a 5x5 sigmoid conv to 1 channel."""
  widths: Sequence[int] = (128, 256, 512, 1024)
  out_channels: int = 1
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, z_bhwc):
    x = z_bhwc
    for i, w in enumerate(reversed(self.widths)):
      x = Upscale(w // 4, dtype=self.dtype, name=f"upscale_{i}")(x)
    x = nn.Conv(self.out_channels, (5, 5), padding="SAME", dtype=self.dtype, name="output")(x)
    return nn.sigmoid(x.astype(jnp.float32))


class AutoEncoder(nn.Module):
  """E, D_x (person) and D_y (template); `__call__(x, y)` -> (D_x(E(x)), D_y(E(y)))."""
  widths: Sequence[int] = (128, 256, 512, 1024)
  latent: int = 1024
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    self.encoder = Encoder(self.widths, self.latent, self.dtype)
    self.decoder_x = Decoder(self.widths, dtype=self.dtype)
    self.decoder_y = Decoder(self.widths, dtype=self.dtype)

  def __call__(self, x, y):
    return self.reconstruct_x(x), self.reconstruct_y(y)

  def reconstruct_x(self, x):
    return self.decoder_x(self.encoder(x))

  def reconstruct_y(self, y):
    return self.decoder_y(self.encoder(y))

  def normalize(self, x):
    """The DeepFN normalization X_y = D_y(E(X)) (paper eq. 2)."""
    return self.decoder_y(self.encoder(x))


def l1_loss(pred: jax.Array, target: jax.Array) -> jax.Array:
  """Mean absolute error (paper eq. 1)."""
  return jnp.mean(jnp.abs(pred.astype(jnp.float32) - target.astype(jnp.float32)))
