"""PyTorch twin of F_nor (`norface_jax.models.normalizer.Normalizer`), eval mode.

Submodules follow the Flax ones: `encoder` (the timm-layout ViT E_s), `emm` (the
Expression Merging Module: `qkv`, `proj`, `norm_fu`, `mlp_fu.{fc1,fc2}`, timm
`blocks.{i}`, `norm`) and `decoder` (D_f, convs keyed by their Flax names: `stem`,
`up{s}_conv0`, `up{s}_conv1`, `to_rgb`). Inputs are NCHW RGB images in [0, 1] (the
network applies the MAE mean/std itself); the output is an NCHW image in [0, 1].
Shape letters: B batch, N tokens (1 + patches), D width, H heads, K head width,
G patch-grid side.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from norface_jax.torch_twins.vit import Block, Mlp, VisionTransformer, decode_variant

MAE_MEAN = (0.485, 0.456, 0.406)
MAE_STD = (0.229, 0.224, 0.225)


class ExpressionMerging(nn.Module):
  """EMM: V_fu = softmax(Q_t K_o^T / sqrt(K)) V_o + V_t, proj, + MLP(LN), blocks, LN."""

  def __init__(self, dim: int, num_heads: int, mlp_dim: int, depth: int = 2):
    super().__init__()
    self.num_heads = num_heads
    self.qkv = nn.Linear(dim, 3 * dim)
    self.proj = nn.Linear(dim, dim)
    self.norm_fu = nn.LayerNorm(dim, eps=1e-6)
    self.mlp_fu = Mlp(dim, mlp_dim)
    self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_dim) for _ in range(depth))
    self.norm = nn.LayerNorm(dim, eps=1e-6)

  def _heads(self, x: torch.Tensor) -> torch.Tensor:
    b, n, d = x.shape
    return self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(
        2, 0, 3, 1, 4)  # (3, B, H, N, K)

  def forward(self, e_o: torch.Tensor, e_t: torch.Tensor) -> torch.Tensor:
    b, n, d = e_t.shape
    q_t, _, v_t = self._heads(e_t)
    _, k_o, v_o = self._heads(e_o)
    v_fu = F.scaled_dot_product_attention(q_t, k_o, v_o) + v_t  # (B, H, N, K), eq. 2
    x = self.proj(v_fu.transpose(1, 2).reshape(b, n, d))
    x = x + self.mlp_fu(self.norm_fu(x))
    for block in self.blocks:
      x = block(x)
    return self.norm(x)


class ConvDecoder(nn.Module):
  """D_f: tokens (B, 1+G*G, D) -> (B, 3, G*2^S, G*2^S) in [0, 1]; S = len(channels)."""

  def __init__(self, dim: int, channels: Sequence[int]):
    super().__init__()
    self.num_stages = len(channels)
    self.stem = nn.Conv2d(dim, channels[0], 3, padding=1)
    prev = channels[0]
    for s, c in enumerate(channels):
      self.add_module(f"up{s}_conv0", nn.Conv2d(prev, c, 3, padding=1))
      self.add_module(f"up{s}_conv1", nn.Conv2d(c, c, 3, padding=1))
      prev = c
    self.to_rgb = nn.Conv2d(prev, 3, 3, padding=1)

  def forward(self, tokens: torch.Tensor) -> torch.Tensor:
    x = tokens[:, 1:]  # Drop the class token.
    b, n, d = x.shape
    g = int(round(math.sqrt(n)))
    x = x.transpose(1, 2).reshape(b, d, g, g)  # Row-major patches.
    x = F.leaky_relu(self.stem(x), 0.2)
    for s in range(self.num_stages):
      x = F.interpolate(x, scale_factor=2, mode="nearest")
      x = F.leaky_relu(getattr(self, f"up{s}_conv0")(x), 0.2)
      x = F.leaky_relu(getattr(self, f"up{s}_conv1")(x), 0.2)
    return torch.tanh(self.to_rgb(x)) * 0.5 + 0.5


class NorfaceNormalizer(nn.Module):
  """F_nor(I_o, I_t) -> I_n: shared ViT E_s, EMM, conv decoder D_f (eval mode)."""

  def __init__(self, encoder: str = "B/16", img_size: int = 256,
               decoder_channels: Sequence[int] = (256, 128, 64, 32), emm_depth: int = 2):
    super().__init__()
    cfg = decode_variant(encoder)
    if 2 ** len(decoder_channels) != cfg["patch_size"]:
      raise ValueError(f"decoder_channels {tuple(decoder_channels)} give x"
                       f"{2 ** len(decoder_channels)} upsampling; patch size of {encoder} is "
                       f"{cfg['patch_size']}: need log2(patch) stages")
    self.encoder = VisionTransformer(encoder, img_size)
    self.emm = ExpressionMerging(cfg["embed_dim"], cfg["num_heads"], cfg["mlp_dim"], emm_depth)
    self.decoder = ConvDecoder(cfg["embed_dim"], decoder_channels)
    self.register_buffer("mean", torch.tensor(MAE_MEAN).reshape(1, 3, 1, 1), persistent=False)
    self.register_buffer("std", torch.tensor(MAE_STD).reshape(1, 3, 1, 1), persistent=False)

  def forward(self, image_o: torch.Tensor, image_t: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) original and target faces in [0, 1] -> the normalized face, same shape."""
    b = image_o.shape[0]
    x = torch.cat([image_o, image_t]).float()
    tokens = self.encoder((x - self.mean) / self.std)
    return self.decoder(self.emm(tokens[:b], tokens[b:]))  # eq. 1: one encoder pass
