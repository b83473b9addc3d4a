"""LeNet-5 for AU detection (paper table 3): 64x64x1 in, one sigmoid per AU out.

conv_0 (6@3x3, ReLU) -> avgpool 2 -> conv_1 (16@3x3, ReLU) -> avgpool 2 -> flatten 3136
-> dense_0 (120, ReLU) -> dense_1 (84, ReLU) -> head (A logits). 388,564 parameters for
12 AUs (the paper's "388K"). Returns logits; the sigmoid is in the loss / prediction.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


class LeNet5(nn.Module):
  num_aus: int = 12
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x_bhwc):
    x = x_bhwc.astype(self.dtype)
    x = nn.relu(nn.Conv(6, (3, 3), padding="VALID", dtype=self.dtype, name="conv_0")(x))
    x = nn.avg_pool(x, (2, 2), strides=(2, 2))
    x = nn.relu(nn.Conv(16, (3, 3), padding="VALID", dtype=self.dtype, name="conv_1")(x))
    x = nn.avg_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(120, dtype=self.dtype, name="dense_0")(x))
    x = nn.relu(nn.Dense(84, dtype=self.dtype, name="dense_1")(x))
    return nn.Dense(self.num_aus, dtype=self.dtype, name="head")(x).astype(jnp.float32)
