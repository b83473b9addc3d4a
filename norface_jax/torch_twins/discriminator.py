"""PyTorch twin of D_res (`norface_jax.models.discriminator.MultiScaleDiscriminator`).

Plain PyTorch (no JAX). Submodules follow the Flax names: `scale{s}.conv{i}` (4x4
stride-2 convs, padding 1, LeakyReLU 0.2) and `scale{s}.logits` (3x3 conv to one logit
per patch); scale s sees the input average-pooled 2^s times (3x3, stride 2, "SAME"
padding counted in the mean, as `flax.linen.avg_pool`). Inputs are NCHW images in
[0, 1]; the output is a list of (B, 1, h, w) patch-logit maps, one per scale.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def avg_pool_same(x: torch.Tensor, window: int = 3, stride: int = 2) -> torch.Tensor:
  """`nn.avg_pool(x, (w, w), (s, s), padding="SAME")` of Flax on NCHW (zeros counted)."""
  pads = []
  for size in reversed(x.shape[2:]):  # F.pad order: last dim first.
    out = -(-size // stride)
    total = max((out - 1) * stride + window - size, 0)
    pads += [total // 2, total - total // 2]
  return F.avg_pool2d(F.pad(x, pads), window, stride)


class PatchDiscriminator(nn.Module):
  """Patch logits of one scale, (B, 1, h, w)."""

  def __init__(self, in_channels: int, channels: Sequence[int] = (64, 128, 256)):
    super().__init__()
    self.num_convs = len(channels)
    prev = in_channels
    for i, c in enumerate(channels):
      self.add_module(f"conv{i}", nn.Conv2d(prev, c, 4, 2, 1))
      prev = c
    self.logits = nn.Conv2d(prev, 1, 3, 1, 1)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    for i in range(self.num_convs):
      x = F.leaky_relu(getattr(self, f"conv{i}")(x), 0.2)
    return self.logits(x).float()


class MultiScaleDiscriminator(nn.Module):
  """D_res([I_t, I_n]): a list of patch-logit maps, one per scale; images in [0, 1]."""

  def __init__(self, channels: Sequence[int] = (64, 128, 256), num_scales: int = 2,
               image_channels: int = 3):
    super().__init__()
    self.num_scales = num_scales
    for s in range(num_scales):
      self.add_module(f"scale{s}", PatchDiscriminator(2 * image_channels, channels))

  def forward(self, image_t: torch.Tensor, image_n: torch.Tensor) -> list[torch.Tensor]:
    x = torch.cat([image_t, image_n], dim=1).float() * 2.0 - 1.0
    outs = []
    for s in range(self.num_scales):
      outs.append(getattr(self, f"scale{s}")(x))
      if s + 1 < self.num_scales:
        x = avg_pool_same(x)
    return outs
