"""F_cla, Norface's classification network (paper section 3.2).

One shared ViT E_f encodes each stream (the original face I_o and the
identity-normalised face I_n) to a pooled feature e_f (B, D); the Input MoE M_i
(one MoE block per stream, separate params) refines each to e_h; the Output MoE
M_o fuses the concatenation e_c = [e_h per stream] (B, S*D) and a linear head
gives the task outputs. Shape letters: B batch, S streams, D width.

The "features" stream (table 9's "w/ E_exp&E_eye") replaces an image stream by a
given feature vector (B, F), e.g. the frozen stage-1 expression and eyebrow networks'
outputs, projected to D by a dense layer ('feature_proj') before its Input MoE.

Top-level param names: 'encoder' (ViT), 'feature_proj' (with the features stream),
'input_moe_<stream>' per stream (when use_input_moe), 'output_moe' (when
use_output_moe), 'head' ({kernel, bias}, logical ('embed', 'classes')).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from norface_jax.models.moe import MoEBlock
from norface_jax.models.vit import ViT, decode_variant


def vit_width(variant: str) -> int:
  return decode_variant(variant)["width"]

Dtype = Any
STREAMS = ("orig", "norm", "features")
IMAGE_STREAMS = ("orig", "norm")


class NorfaceClassifier(nn.Module):
  """F_cla: shared ViT + per-stream Input MoE + Output MoE + linear head.

  Attributes:
    encoder: ViT variant of E_f, e.g. "B/16".
    num_outputs: AUs (detection/intensity) or emotion classes.
    streams: ("orig", "norm") is the full model; ("orig",) the "w/o Idn"
      ablation; ("orig", "features") table 9's "w/ E_exp&E_eye". The order fixes
      the concatenation order in M_o.
    use_input_moe / use_output_moe: ablations removing M_i / M_o.
    num_experts (m), top_k (k): per MoE block; num_experts=0 replaces every
      MoE block by a dense MLP ("no MoE").
    expert_hidden: expert MLP hidden width; None means the block's input width
      (D for M_i, S*D for M_o).
    pool: "cls" token or "gap" (mean of patch tokens after the final norm).
    head_init_std: > 0: the head kernel is truncated_normal(head_init_std), MAE's
      fine-tuning convention (2e-5) for a pre-trained encoder; 0: lecun_normal, for
      an encoder trained from scratch (a 2e-5 head on a random encoder freezes
      training: the encoder's gradient is scaled by the head's kernel).
    router_noise, renormalize_gates, dispatch, moe_residual: see MoEBlock.
    dtype / param_dtype / remat / scan / dropout_rate / drop_path_rate /
      pos_embed: ViT.
  """
  encoder: str = "B/16"
  num_outputs: int = 12
  streams: tuple[str, ...] = IMAGE_STREAMS
  use_input_moe: bool = True
  use_output_moe: bool = True
  num_experts: int = 4
  top_k: int = 2
  expert_hidden: int | None = None
  pool: str = "cls"
  router_noise: bool = True
  renormalize_gates: bool = False
  dispatch: str = "dense"
  moe_residual: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  remat: bool = False
  scan: bool = False
  dropout_rate: float = 0.0
  drop_path_rate: float = 0.0
  pos_embed: str = "sincos"
  head_init_std: float = 0.0
  attention: str = "auto"  # vit.attention_implementation
  remat_policy: str = ""   # vit.remat_block

  def setup(self):
    for s in self.streams:
      if s not in STREAMS:
        raise ValueError(f"Unknown stream {s!r}; expected one of {STREAMS}.")
    if self.pool not in ("cls", "gap"):
      raise ValueError(f"Unknown pool {self.pool!r}.")
    self.vit = ViT(self.encoder, self.dtype, self.param_dtype, self.remat,
                   self.scan, self.dropout_rate, self.drop_path_rate,
                   self.pos_embed, self.attention, self.remat_policy, name="encoder")
    moe = lambda name: MoEBlock(
        self.num_experts, self.top_k, self.expert_hidden, self.router_noise,
        self.renormalize_gates, self.dispatch, self.moe_residual, self.dtype,
        self.param_dtype, name=name)
    if self.use_input_moe:
      self.input_moe = {s: moe(f"input_moe_{s}") for s in self.streams}
    if "features" in self.streams:
      self.feature_proj = nn.Dense(
          vit_width(self.encoder), dtype=self.dtype, param_dtype=self.param_dtype,
          kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                   (None, "embed")),
          bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
          name="feature_proj")
    if self.use_output_moe:
      self.output_moe = moe("output_moe")
    if self.head_init_std < 0:
      raise ValueError(f"head_init_std={self.head_init_std} < 0")
    head_init = (nn.initializers.truncated_normal(self.head_init_std)
                 if self.head_init_std > 0 else nn.initializers.lecun_normal())
    self.head = nn.Dense(
        self.num_outputs, dtype=self.dtype, param_dtype=self.param_dtype,
        kernel_init=nn.with_logical_partitioning(head_init, ("embed", "classes")),
        bias_init=nn.with_logical_partitioning(
            nn.initializers.zeros, ("classes",)),
        name="head")

  def encode(self, images: jax.Array, *, train: bool = False) -> jax.Array:
    """E_f: (B, H, W, C) images -> pooled features e_f (B, D)."""
    tokens = self.vit(images, train=train)
    if self.pool == "cls":
      return tokens[:, 0]
    return jnp.mean(tokens[:, 1:], axis=1)

  def __call__(self, images_orig: jax.Array,
               images_norm: jax.Array | None = None, *,
               features: jax.Array | None = None,
               train: bool) -> tuple[jax.Array, dict[str, dict[str, Any]]]:
    """Returns (outputs (B, num_outputs) logits/values, router aux dicts).

    aux keys: 'input_moe/<stream>' and 'output_moe' for the MoE blocks that
    exist (each a MoEBlock aux dict; empty dicts when num_experts=0).
    """
    given = {"orig": images_orig, "norm": images_norm, "features": features}
    for s in self.streams:
      if given[s] is None:
        raise ValueError(f"Stream {s!r} needs " + ("features." if s == "features"
                                                    else f"images_{s}."))
    b = images_orig.shape[0]
    images = [s for s in self.streams if s in IMAGE_STREAMS]
    # One encoder pass over all image streams stacked on the batch axis.
    e_f = self.encode(jnp.concatenate([given[s] for s in images], 0), train=train)
    aux = {}
    e_h = []
    for s in self.streams:
      if s == "features":
        e = self.feature_proj(features.astype(self.dtype))
      else:
        i = images.index(s)
        e = e_f[i * b:(i + 1) * b]
      if self.use_input_moe:
        e, aux[f"input_moe/{s}"] = self.input_moe[s](e, train=train)
      e_h.append(e)
    e_c = jnp.concatenate(e_h, axis=-1)  # (B, S*D)
    if self.use_output_moe:
      e_c, aux["output_moe"] = self.output_moe(e_c, train=train)
    return self.head(e_c), aux
