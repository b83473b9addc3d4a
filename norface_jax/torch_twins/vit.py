"""PyTorch twin of `norface_jax.models.vit.ViT` with timm/MAE key names.

Plain PyTorch (no JAX): `patch_embed.proj.weight`, `cls_token`, `pos_embed`,
`blocks.{i}.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}`, `norm`, the
layout of timm's `VisionTransformer` and of MAE checkpoints. Inputs are NCHW.
Shape letters: B batch, N tokens (1 + patches), D width, H heads, Dh head width.

`pos_embed` is MAE's fixed 2-D sin-cos table for `img_size`, stored as a buffer
so that the state_dict carries it as timm/MAE do; another input size recomputes
the table for its grid (exactly what the JAX model does). With
`pos_embed="learned"` it is a parameter (1, 1 + G*G, D), G = img_size / patch, and
another grid resamples it as timm's `resample_abs_pos_embed` (cls row kept, patch
rows `F.interpolate(mode="bicubic", antialias=True)`), as the JAX model does.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

VARIANTS = {
    # name: (width, depth, heads); mlp_dim = 4 * width. Same table as the JAX ViT.
    "mu": (32, 2, 2),
    "nano": (96, 4, 3),
    "Ti": (192, 12, 3),
    "S": (384, 12, 6),
    "B": (768, 12, 12),
    "L": (1024, 24, 16),
}


def decode_variant(variant: str) -> dict[str, int]:
  """"B/16" -> dict(embed_dim, depth, num_heads, mlp_dim, patch_size)."""
  name, _, patch = variant.partition("/")
  if name not in VARIANTS or not patch.isdigit():
    raise ValueError(f"Unknown ViT variant {variant!r}; expected one of "
                     f"{sorted(VARIANTS)} + '/<patch>'.")
  width, depth, heads = VARIANTS[name]
  return dict(embed_dim=width, depth=depth, num_heads=heads, mlp_dim=4 * width,
              patch_size=int(patch))


def resample_pos_embed(pos_embed: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
  """(1, 1 + g*g, D) (square grid, cls row first) -> (1, 1 + gh*gw, D), like timm."""
  n, d = pos_embed.shape[1], pos_embed.shape[2]
  g = int(round((n - 1) ** 0.5))
  if g * g != n - 1:
    raise ValueError(f"position table of {n} rows is not 1 + a square grid")
  if (g, g) == (grid_h, grid_w):
    return pos_embed
  grid = pos_embed[:, 1:].float().reshape(1, g, g, d).permute(0, 3, 1, 2)
  grid = F.interpolate(grid, size=(grid_h, grid_w), mode="bicubic", antialias=True,
                       align_corners=False)
  grid = grid.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, d).to(pos_embed.dtype)
  return torch.cat([pos_embed[:, :1], grid], dim=1)


def sincos_pos_embed(dim: int, grid_h: int, grid_w: int) -> torch.Tensor:
  """MAE's 2-D sin-cos table (1 + gh * gw, dim), zero cls row, computed in float64.

  First dim/2 channels encode the column index, the last dim/2 the row index;
  each half is [sin(pos w_i), cos(pos w_i)] with w_i = 10000^(-i / (dim/4)).
  """
  if dim % 4:
    raise ValueError(f"2-D sin-cos needs a width divisible by 4, got {dim}")
  quarter = dim // 4
  omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
  rows, cols = torch.meshgrid(torch.arange(grid_h, dtype=torch.float64),
                              torch.arange(grid_w, dtype=torch.float64), indexing="ij")
  def one_d(pos):
    out = pos.reshape(-1, 1) * omega[None]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)
  emb = torch.cat([one_d(cols), one_d(rows)], dim=1)
  return torch.cat([torch.zeros(1, dim, dtype=torch.float64), emb], 0).float()


class PatchEmbed(nn.Module):
  def __init__(self, patch_size: int, in_chans: int, embed_dim: int):
    super().__init__()
    self.patch_size = patch_size
    self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.proj(x).flatten(2).transpose(1, 2)  # (B, N, D), row-major patches


class Attention(nn.Module):
  def __init__(self, dim: int, num_heads: int):
    super().__init__()
    self.num_heads = num_heads
    self.qkv = nn.Linear(dim, 3 * dim)
    self.proj = nn.Linear(dim, dim)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    b, n, d = x.shape
    qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, H, N, Dh)
    o = F.scaled_dot_product_attention(q, k, v)
    return self.proj(o.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
  def __init__(self, dim: int, hidden: int):
    super().__init__()
    self.fc1 = nn.Linear(dim, hidden)
    self.fc2 = nn.Linear(hidden, dim)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
  """Pre-norm block: x + attn(norm1(x)); x + mlp(norm2(x)); LayerNorm eps 1e-6."""

  def __init__(self, dim: int, num_heads: int, mlp_dim: int):
    super().__init__()
    self.norm1 = nn.LayerNorm(dim, eps=1e-6)
    self.attn = Attention(dim, num_heads)
    self.norm2 = nn.LayerNorm(dim, eps=1e-6)
    self.mlp = Mlp(dim, mlp_dim)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = x + self.attn(self.norm1(x))
    return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
  """The project's ViT encoder: NCHW images -> all tokens after `norm` (B, 1+N, D)."""

  def __init__(self, variant: str = "B/16", img_size: int = 224, in_chans: int = 3,
               pos_embed: str = "sincos"):
    super().__init__()
    if pos_embed not in ("sincos", "learned"):
      raise ValueError(f"Unknown pos_embed {pos_embed!r}; expected 'sincos' or 'learned'.")
    cfg = decode_variant(variant)
    self.variant, self.img_size, self.learned_pos = variant, img_size, pos_embed == "learned"
    self.patch_size, self.embed_dim = cfg["patch_size"], cfg["embed_dim"]
    grid = img_size // self.patch_size
    self.patch_embed = PatchEmbed(self.patch_size, in_chans, self.embed_dim)
    self.cls_token = nn.Parameter(torch.zeros(1, 1, self.embed_dim))
    table = sincos_pos_embed(self.embed_dim, grid, grid)[None]
    if self.learned_pos:
      self.pos_embed = nn.Parameter(torch.zeros_like(table))
    else:
      self.register_buffer("pos_embed", table)
    self.blocks = nn.ModuleList(
        Block(self.embed_dim, cfg["num_heads"], cfg["mlp_dim"]) for _ in range(cfg["depth"]))
    self.norm = nn.LayerNorm(self.embed_dim, eps=1e-6)

  def _pos_embed(self, gh: int, gw: int, x: torch.Tensor) -> torch.Tensor:
    if self.pos_embed.shape[1] == 1 + gh * gw and gh == gw:
      return self.pos_embed.to(x.dtype)
    if self.learned_pos:
      return resample_pos_embed(self.pos_embed, gh, gw).to(x.dtype)
    return sincos_pos_embed(self.embed_dim, gh, gw)[None].to(x.device, x.dtype)

  def forward(self, images_nchw: torch.Tensor) -> torch.Tensor:
    _, _, h, w = images_nchw.shape
    p = self.patch_size
    if h % p or w % p:
      raise ValueError(f"Image size {(h, w)} not divisible by patch {p}.")
    x = self.patch_embed(images_nchw)
    x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
    x = x + self._pos_embed(h // p, w // p, x)
    for block in self.blocks:
      x = block(x)
    return self.norm(x)


