"""PyTorch twin of `norface_jax.models.moe.MoEBlock` (evaluation semantics).

Parameter names are the Flax ones, so the state_dict keys are the Flax paths:
`norm.{weight,bias}`, `router.{w_gate,w_noise}` (D, E),
`experts.{wi (E, D, F), bi (E, F), wo (E, F, D), bo (E, D)}`; with
num_experts == 0, `mlp.{wi (D, F), bi, wo (F, D), bo}`.
Shape letters: T tokens, D width, F expert hidden width, E experts, K top-k.

In eval mode the router adds no noise; in train mode (`module.train()`) it adds
N(0,1) * softplus(x W_noise) to the logits like the JAX block with `train=True`
(used by PyTorch fine-tuning and the side-by-side benchmark). Top-k ties go to the
lower expert index, as `jax.lax.top_k`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MlpExpert(nn.Module):
  """Dense(F) -> exact GELU -> Dense(D), with raw (in, out) weight matrices."""

  def __init__(self, width: int, hidden_dim: int):
    super().__init__()
    self.wi = nn.Parameter(torch.zeros(width, hidden_dim))
    self.bi = nn.Parameter(torch.zeros(hidden_dim))
    self.wo = nn.Parameter(torch.zeros(hidden_dim, width))
    self.bo = nn.Parameter(torch.zeros(width))

  def forward(self, x_td: torch.Tensor) -> torch.Tensor:
    return F.gelu(x_td @ self.wi + self.bi) @ self.wo + self.bo


class Experts(nn.Module):
  """E stacked experts; `forward` runs every expert on every token: (E, T, D)."""

  def __init__(self, num_experts: int, width: int, hidden_dim: int):
    super().__init__()
    e, d, f = num_experts, width, hidden_dim
    self.wi = nn.Parameter(torch.zeros(e, d, f))
    self.bi = nn.Parameter(torch.zeros(e, f))
    self.wo = nn.Parameter(torch.zeros(e, f, d))
    self.bo = nn.Parameter(torch.zeros(e, d))

  def forward(self, x_td: torch.Tensor) -> torch.Tensor:
    h_etf = F.gelu(torch.einsum("td,edf->etf", x_td, self.wi) + self.bi[:, None])
    return torch.einsum("etf,efd->etd", h_etf, self.wo) + self.bo[:, None]


class Router(nn.Module):
  """Top-k of softmax(x W_g); returns sparse gates (T, E) and probabilities."""

  def __init__(self, width: int, num_experts: int, top_k: int, renormalize: bool = False):
    super().__init__()
    self.top_k, self.renormalize = top_k, renormalize
    self.w_gate = nn.Parameter(torch.zeros(width, num_experts))
    self.w_noise = nn.Parameter(torch.zeros(width, num_experts))  # Training only.

  def forward(self, x_td: torch.Tensor) -> dict[str, torch.Tensor]:
    logits_te = x_td.float() @ self.w_gate.float()
    if self.training:
      noise_std = F.softplus(x_td.float() @ self.w_noise.float())
      logits_te = logits_te + torch.randn_like(logits_te) * noise_std
    probs_te = torch.softmax(logits_te, dim=-1)
    # Stable descending sort: ties keep the lower index first, like lax.top_k.
    vals, idx = torch.sort(probs_te, dim=-1, descending=True, stable=True)
    vals_tk, idx_tk = vals[:, :self.top_k], idx[:, :self.top_k]
    if self.renormalize:
      vals_tk = vals_tk / vals_tk.sum(-1, keepdim=True)
    gates_te = torch.zeros_like(probs_te).scatter(1, idx_tk, vals_tk)
    return {"gates": gates_te, "probs": probs_te, "topk_idx": idx_tk, "topk_vals": vals_tk}


class MoEBlock(nn.Module):
  """out = x + sum_e G_e(LN(x)) Exp_e(LN(x)) (residual), or the bare mixture."""

  def __init__(self, width: int, num_experts: int = 4, top_k: int = 2,
               hidden_dim: int | None = None, residual: bool = True,
               renormalize: bool = False):
    super().__init__()
    f = hidden_dim or width
    self.num_experts, self.residual = num_experts, residual
    if residual:
      self.norm = nn.LayerNorm(width, eps=1e-6)
    if num_experts == 0:
      self.mlp = MlpExpert(width, f)
    else:
      self.router = Router(width, num_experts, top_k, renormalize)
      self.experts = Experts(num_experts, width, f)

  def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    lead, d = x.shape[:-1], x.shape[-1]
    x_td = x.reshape(-1, d)
    h_td = self.norm(x_td) if self.residual else x_td
    if self.num_experts == 0:
      y_td, aux = self.mlp(h_td), {}
    else:
      aux = self.router(h_td)
      y_td = torch.einsum("te,etd->td", aux["gates"].to(h_td.dtype), self.experts(h_td))
    out = x_td + y_td if self.residual else y_td
    return out.reshape(*lead, d), aux
