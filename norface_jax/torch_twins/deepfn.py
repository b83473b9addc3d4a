"""PyTorch twins of the DeepFN networks (`norface_jax.deepfn.{autoencoder, lenet}`).

Plain PyTorch (no JAX). Inputs are NCHW grayscale images in [0, 1] (DeepFN's
pre-processing: grayscale, histogram equalization, resize). Submodule names follow
the Flax ones: `encoder.{conv_0..3, dense_latent, dense_project, upscale.conv}`,
`decoder_{x,y}.{upscale_0..3.conv, output}`; LeNet-5 `conv_0, conv_1, dense_0,
dense_1, head`. Flattening is PyTorch's (C, H, W) order: `interop.keymap` permutes
the Flax (H, W, C) rows/columns of the Dense kernels next to a flatten/reshape, so
these are ordinary PyTorch networks.

Convolutions pad as Flax/TF "SAME" (for the stride-2 5x5 encoder convs that is 1
before and 2 after, not PyTorch's symmetric 2).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

LEAKY_SLOPE = 0.1


class SameConv2d(nn.Conv2d):
  """`nn.Conv2d` with TF/Flax "SAME" padding (asymmetric when the total is odd)."""

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    pads = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(self.kernel_size),
                          reversed(self.stride)):  # F.pad order: last dim first.
      out = -(-size // s)
      total = max((out - 1) * s + k - size, 0)
      pads += [total // 2, total - total // 2]
    return super().forward(F.pad(x, pads))


class Upscale(nn.Module):
  """Conv 3x3 to 4 * filters, LeakyReLU(0.1), PixelShuffle(2)."""

  def __init__(self, in_channels: int, filters: int):
    super().__init__()
    self.conv = SameConv2d(in_channels, 4 * filters, 3)
    self.shuffle = nn.PixelShuffle(2)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.shuffle(F.leaky_relu(self.conv(x), LEAKY_SLOPE))


class Encoder(nn.Module):
  """Table 1: 4 strided 5x5 convs, Dense latent, Dense to (S/32)^2 x C, Upscale."""

  def __init__(self, widths: Sequence[int], latent: int, image_size: int, in_channels: int = 1):
    super().__init__()
    if image_size % 32:
      raise ValueError(f"image_size must be divisible by 32, got {image_size}")
    self.widths, self.s0 = tuple(widths), image_size // 32
    chans = (in_channels,) + self.widths
    for i in range(len(self.widths)):
      self.add_module(f"conv_{i}", SameConv2d(chans[i], chans[i + 1], 5, stride=2))
    grid = image_size // 2 ** len(self.widths)
    self.dense_latent = nn.Linear(grid * grid * self.widths[-1], latent)
    self.dense_project = nn.Linear(latent, self.s0 * self.s0 * self.widths[-1])
    self.upscale = Upscale(self.widths[-1], self.widths[-1] // 2)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    for i in range(len(self.widths)):
      x = F.leaky_relu(getattr(self, f"conv_{i}")(x), LEAKY_SLOPE)
    x = self.dense_project(self.dense_latent(x.flatten(1)))
    return self.upscale(x.view(x.shape[0], self.widths[-1], self.s0, self.s0))


class Decoder(nn.Module):
  """Table 2: four Upscale stages (widths[::-1] / 4), a 5x5 conv and a sigmoid."""

  def __init__(self, widths: Sequence[int], out_channels: int = 1):
    super().__init__()
    filters = [w // 4 for w in reversed(widths)]
    in_ch = [widths[-1] // 2] + filters[:-1]
    for i, (c, f) in enumerate(zip(in_ch, filters)):
      self.add_module(f"upscale_{i}", Upscale(c, f))
    self.num_stages = len(filters)
    self.output = SameConv2d(filters[-1], out_channels, 5)

  def forward(self, z: torch.Tensor) -> torch.Tensor:
    for i in range(self.num_stages):
      z = getattr(self, f"upscale_{i}")(z)
    return torch.sigmoid(self.output(z))


class DeepFNAutoEncoder(nn.Module):
  """E, D_x (person) and D_y (template); `forward(x, y)` -> (D_x(E(x)), D_y(E(y)))."""

  def __init__(self, widths: Sequence[int] = (128, 256, 512, 1024), latent: int = 1024,
               image_size: int = 128, in_channels: int = 1):
    super().__init__()
    self.encoder = Encoder(widths, latent, image_size, in_channels)
    self.decoder_x = Decoder(widths, in_channels)
    self.decoder_y = Decoder(widths, in_channels)

  def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return self.reconstruct_x(x), self.reconstruct_y(y)

  def reconstruct_x(self, x: torch.Tensor) -> torch.Tensor:
    return self.decoder_x(self.encoder(x))

  def reconstruct_y(self, y: torch.Tensor) -> torch.Tensor:
    return self.decoder_y(self.encoder(y))

  def normalize(self, x: torch.Tensor) -> torch.Tensor:
    """The DeepFN normalization D_y(E(x)): x onto the template person."""
    return self.decoder_y(self.encoder(x))


class LeNet5(nn.Module):
  """Table 3: conv 6@3x3, avgpool, conv 16@3x3, avgpool, 120, 84, A logits."""

  def __init__(self, num_aus: int = 12, image_size: int = 64, in_channels: int = 1):
    super().__init__()
    self.conv_0 = nn.Conv2d(in_channels, 6, 3)
    self.conv_1 = nn.Conv2d(6, 16, 3)
    grid = ((image_size - 2) // 2 - 2) // 2
    self.dense_0 = nn.Linear(16 * grid * grid, 120)
    self.dense_1 = nn.Linear(120, 84)
    self.head = nn.Linear(84, num_aus)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    """Logits (B, A); the AU probabilities are their sigmoid."""
    x = F.avg_pool2d(F.relu(self.conv_0(x)), 2)
    x = F.avg_pool2d(F.relu(self.conv_1(x)), 2)
    x = F.relu(self.dense_0(x.flatten(1)))
    return self.head(F.relu(self.dense_1(x)))
