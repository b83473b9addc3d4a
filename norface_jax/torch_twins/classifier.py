"""PyTorch twin of F_cla (`norface_jax.models.classifier.NorfaceClassifier`).

Submodule names follow the Flax ones: `encoder` (the timm-layout ViT),
`input_moe_<stream>`, `output_moe`, `head` (nn.Linear). Inputs are NCHW images
normalised with the ImageNet mean/std, as in the JAX trainer.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from norface_jax.torch_twins.moe import MoEBlock
from norface_jax.torch_twins.vit import VisionTransformer, decode_variant

STREAMS = ("orig", "norm")


class NorfaceClassifier(nn.Module):
  """Shared ViT E_f + per-stream Input MoE + Output MoE + linear head (eval mode)."""

  def __init__(self, encoder: str = "B/16", img_size: int = 224, num_outputs: int = 12,
               streams: Sequence[str] = STREAMS, use_input_moe: bool = True,
               use_output_moe: bool = True, num_experts: int = 4, top_k: int = 2,
               expert_hidden: int | None = None, pool: str = "cls",
               moe_residual: bool = True, renormalize_gates: bool = False,
               pos_embed: str = "sincos"):
    super().__init__()
    for s in streams:
      if s not in STREAMS:
        raise ValueError(f"Unknown stream {s!r}; expected one of {STREAMS}.")
    if pool not in ("cls", "gap"):
      raise ValueError(f"Unknown pool {pool!r}.")
    self.streams, self.pool = tuple(streams), pool
    self.use_input_moe, self.use_output_moe = use_input_moe, use_output_moe
    d = decode_variant(encoder)["embed_dim"]
    self.encoder = VisionTransformer(encoder, img_size, pos_embed=pos_embed)
    moe = lambda width: MoEBlock(width, num_experts, top_k, expert_hidden, moe_residual,
                                 renormalize_gates)
    if use_input_moe:
      for s in self.streams:
        self.add_module(f"input_moe_{s}", moe(d))
    fused = d * len(self.streams)
    if use_output_moe:
      self.output_moe = moe(fused)
    self.head = nn.Linear(fused, num_outputs)

  def encode(self, images: torch.Tensor) -> torch.Tensor:
    """E_f: (B, C, H, W) -> pooled features (B, D)."""
    tokens = self.encoder(images)
    return tokens[:, 0] if self.pool == "cls" else tokens[:, 1:].mean(1)

  def forward(self, images_orig: torch.Tensor,
              images_norm: torch.Tensor | None = None) -> torch.Tensor:
    """Returns the logits/values (B, num_outputs)."""
    given = {"orig": images_orig, "norm": images_norm}
    for s in self.streams:
      if given[s] is None:
        raise ValueError(f"Stream {s!r} needs images_{s}.")
    e_h = []
    for s in self.streams:
      e = self.encode(given[s])
      if self.use_input_moe:
        e, _ = getattr(self, f"input_moe_{s}")(e)
      e_h.append(e)
    e_c = torch.cat(e_h, dim=-1)
    if self.use_output_moe:
      e_c, _ = self.output_moe(e_c)
    return self.head(e_c)
