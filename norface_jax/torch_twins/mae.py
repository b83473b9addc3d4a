"""PyTorch twin of the MAE (`norface_jax.models.mae.MAE`): encoder on visible patches,
light decoder predicting every patch's pixels, and MAE's normalized-pixel loss.

Plain PyTorch (no JAX). The encoder is the ViT twin (`encoder.*`, timm/MAE keys) run
on the kept patches only; the decoder follows the Flax names: `decoder_embed`,
`mask_token`, `decoder_blocks.{i}` (timm blocks), `decoder_norm`, `decoder_pred`; the
decoder's sin-cos positions are a non-persistent buffer. Masking is MAE's per-sample
argsort of uniform noise; pass `noise` (B, N) to fix it (argsort(noise) is the
shuffle, the first K = round(N (1 - ratio)) patches are kept). Inputs are NCHW images
already normalised as the trainer does (ImageNet mean/std).

Shape letters: B batch, N patches, K kept patches, D encoder width, E decoder width,
P patch size, C channels.
"""

from __future__ import annotations

import torch
from torch import nn

from norface_jax.torch_twins.vit import Block, VisionTransformer, decode_variant, sincos_pos_embed


def patchify(images_nchw: torch.Tensor, patch: int) -> torch.Tensor:
  """(B, C, H, W) -> (B, N, P*P*C), patches row-major, pixels in (p, q, c) order as MAE."""
  b, c, h, w = images_nchw.shape
  x = images_nchw.reshape(b, c, h // patch, patch, w // patch, patch)
  return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), patch * patch * c)


def patch_targets(images_nchw: torch.Tensor, patch: int, norm_pix: bool = True) -> torch.Tensor:
  """Reconstruction targets; `norm_pix`: each patch standardised (unbiased var, eps 1e-6)."""
  t = patchify(images_nchw.float(), patch)
  if not norm_pix:
    return t
  mean = t.mean(-1, keepdim=True)
  var = t.var(-1, keepdim=True, unbiased=True)
  return (t - mean) / torch.sqrt(var + 1e-6)


def reconstruction_loss(pred: torch.Tensor, target: torch.Tensor,
                        mask: torch.Tensor) -> torch.Tensor:
  """Mean over masked patches of the per-patch mean squared error."""
  per_patch = ((pred.float() - target) ** 2).mean(-1)
  return (per_patch * mask).sum() / mask.sum().clamp_min(1.0)


class MaskedAutoencoder(nn.Module):
  """MAE with the project ViT as encoder; `forward` -> {pred, mask, ids_restore}."""

  def __init__(self, encoder: str = "B/16", img_size: int = 224, decoder_width: int = 512,
               decoder_depth: int = 8, decoder_heads: int = 16, mask_ratio: float = 0.75,
               in_chans: int = 3):
    super().__init__()
    cfg = decode_variant(encoder)
    self.patch_size, self.mask_ratio = cfg["patch_size"], mask_ratio
    self.encoder = VisionTransformer(encoder, img_size, in_chans)
    grid = img_size // self.patch_size
    e = decoder_width
    self.decoder_embed = nn.Linear(cfg["embed_dim"], e)
    self.mask_token = nn.Parameter(torch.zeros(1, 1, e))
    self.register_buffer("decoder_pos_embed", sincos_pos_embed(e, grid, grid)[None],
                         persistent=False)
    self.decoder_blocks = nn.ModuleList(Block(e, decoder_heads, 4 * e)
                                        for _ in range(decoder_depth))
    self.decoder_norm = nn.LayerNorm(e, eps=1e-6)
    self.decoder_pred = nn.Linear(e, self.patch_size ** 2 * in_chans)

  def random_masking(self, batch: int, num_patches: int, ratio: float,
                     noise: torch.Tensor | None = None, device=None) -> dict[str, torch.Tensor]:
    keep = max(1, int(round(num_patches * (1.0 - ratio))))
    if noise is None:
      noise = torch.rand(batch, num_patches, device=device)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    mask = torch.ones(batch, num_patches, device=device)
    mask[:, :keep] = 0.0
    mask = torch.gather(mask, 1, ids_restore)
    return {"ids_keep": ids_shuffle[:, :keep], "mask": mask, "ids_restore": ids_restore}

  def forward_encoder(self, images: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 1 + K, D) tokens of the cls and the kept patches."""
    enc = self.encoder
    _, _, h, w = images.shape
    p = self.patch_size
    x = enc.patch_embed(images)  # (B, N, D)
    pos = enc._pos_embed(h // p, w // p, x)  # pylint: disable=protected-access
    x = x + pos[:, 1:]
    x = torch.gather(x, 1, ids_keep[:, :, None].expand(-1, -1, x.shape[-1]))
    cls = (enc.cls_token + pos[:, :1]).expand(x.shape[0], -1, -1)
    x = torch.cat([cls, x], dim=1)
    for block in enc.blocks:
      x = block(x)
    return enc.norm(x)

  def forward(self, images: torch.Tensor, mask_ratio: float | None = None,
              noise: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    b, _, h, w = images.shape
    p = self.patch_size
    n = (h // p) * (w // p)
    ratio = self.mask_ratio if mask_ratio is None else mask_ratio
    m = self.random_masking(b, n, ratio, noise, images.device)
    x = self.decoder_embed(self.forward_encoder(images, m["ids_keep"]))  # (B, 1 + K, E)
    k = x.shape[1] - 1
    tokens = torch.cat([x[:, 1:], self.mask_token.to(x.dtype).expand(b, n - k, -1)], dim=1)
    tokens = torch.gather(tokens, 1, m["ids_restore"][:, :, None].expand(-1, -1, x.shape[-1]))
    x = torch.cat([x[:, :1], tokens], dim=1)
    if self.decoder_pos_embed.shape[1] == 1 + n:
      pos = self.decoder_pos_embed
    else:
      pos = sincos_pos_embed(x.shape[-1], h // p, w // p)[None].to(x.device)
    x = x + pos.to(x.dtype)
    for block in self.decoder_blocks:
      x = block(x)
    pred = self.decoder_pred(self.decoder_norm(x))[:, 1:]
    return {"pred": pred.float(), "mask": m["mask"], "ids_restore": m["ids_restore"]}
