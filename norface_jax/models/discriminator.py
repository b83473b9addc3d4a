"""D_res: a multi-scale patch discriminator on the channel concatenation [I_t, I_n].

Each scale is a stack of 4x4 stride-2 convs with LeakyReLU(0.2) and a final 3x3 conv
to one logit per patch; scale s sees the input average-pooled 2^s times (pix2pixHD).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class PatchDiscriminator(nn.Module):
  """Patch logits of one scale, (B, h, w, 1)."""
  channels: Sequence[int] = (64, 128, 256)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i, c in enumerate(self.channels):
      x = nn.leaky_relu(nn.Conv(c, (4, 4), (2, 2), padding=1, dtype=self.dtype,
                                name=f"conv{i}")(x), 0.2)
    return nn.Conv(1, (3, 3), padding=1, dtype=self.dtype, name="logits")(x).astype(jnp.float32)


class MultiScaleDiscriminator(nn.Module):
  """D_res([I_t, I_n]): a list of patch-logit maps, one per scale; images in [0, 1]."""
  channels: Sequence[int] = (64, 128, 256)
  num_scales: int = 2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, image_t: jax.Array, image_n: jax.Array) -> list[jax.Array]:
    x = (jnp.concatenate([image_t, image_n], axis=-1).astype(jnp.float32) * 2.0 - 1.0)
    x = x.astype(self.dtype)
    outs = []
    for s in range(self.num_scales):
      outs.append(PatchDiscriminator(tuple(self.channels), self.dtype, name=f"scale{s}")(x))
      x = nn.avg_pool(x, (3, 3), (2, 2), padding="SAME")
    return outs
