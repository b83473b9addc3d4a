"""F_nor, Norface's identity normalization network (sec. 3.1, Fig. 2).

A shared ViT encoder E_s (`vit.ViT`, MAE-initialisable under `encoder`) maps the
original face I_o and the target face I_t to tokens e_o, e_t; the Expression Merging
Module fuses them (cross-attention with queries from e_t and keys/values from e_o,
V_fu = CA(Q_t, K_o) V_o + V_t, LayerNorm + MLP, two transformer blocks); a
convolutional decoder D_f turns the patch grid back into an image of the input size
(patch grid x 2^stages, one stage per factor 2 of the patch size).

Shape letters: B batch, N tokens (1 + patches), D width, H heads, K head width,
G patch-grid side, C channels.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from norface_jax.models import vit as vit_lib
from norface_jax.models.activation_sharding import constrain

MAE_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
MAE_STD = np.array([0.229, 0.224, 0.225], np.float32)


class ExpressionMerging(nn.Module):
  """EMM: cross-attention (Q from target, K/V from original) + V_t, LN + MLP, 2 blocks."""
  num_heads: int
  mlp_dim: int
  depth: int = 2
  dtype: Any = jnp.float32
  attention: str = "auto"

  @nn.compact
  def __call__(self, e_o_bnd: jax.Array, e_t_bnd: jax.Array, train: bool) -> jax.Array:
    d = e_t_bnd.shape[-1]
    k_dim = d // self.num_heads
    qkv = nn.DenseGeneral(
        (3, self.num_heads, k_dim), dtype=self.dtype, name="qkv",
        kernel_init=nn.with_logical_partitioning(
            nn.initializers.xavier_uniform(), ("embed", None, "heads", "kv")))
    heads = lambda a: constrain(a, vit_lib._HEADS)  # noqa: E731
    q_t, _, v_t = map(heads, jnp.moveaxis(qkv(e_t_bnd), 2, 0))  # (B, N, H, K) each
    _, k_o, v_o = map(heads, jnp.moveaxis(qkv(e_o_bnd), 2, 0))
    ca_bhnm = jax.nn.softmax(
        jnp.einsum("bnhk,bmhk->bhnm", q_t, k_o).astype(jnp.float32) / math.sqrt(k_dim), axis=-1)
    v_fu = heads(jnp.einsum("bhnm,bmhk->bnhk", ca_bhnm.astype(v_o.dtype), v_o) + v_t)  # eq. 2
    x = nn.DenseGeneral(d, axis=(-2, -1), dtype=self.dtype, name="proj",
                        kernel_init=nn.with_logical_partitioning(
                            nn.initializers.xavier_uniform(), ("heads", "kv", "embed")))(v_fu)
    x = constrain(x, vit_lib._TOKENS)
    y = vit_lib._layer_norm("norm_fu", self.dtype, jnp.float32)(x)
    x = x + vit_lib.Mlp(self.mlp_dim, dtype=self.dtype, name="mlp_fu")(y, not train)
    for i in range(self.depth):
      x = vit_lib.Block(self.num_heads, self.mlp_dim, dtype=self.dtype, attention=self.attention,
                        name=f"block_{i}")(x, train)
    return vit_lib._layer_norm("norm", self.dtype, jnp.float32)(x)


class ConvDecoder(nn.Module):
  """D_f: patch tokens (B, 1+G*G, D) -> image (B, G*2^S, G*2^S, 3) in [0, 1].

  Each of the S = len(channels) stages doubles the resolution (nearest) and applies
  two 3x3 convs with LeakyReLU; a 3x3 conv and tanh give the image.
  """
  channels: Sequence[int] = (128, 64, 32)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens_bnd: jax.Array) -> jax.Array:
    x = tokens_bnd[:, 1:]  # drop the class token
    b, n, d = x.shape
    g = int(round(math.sqrt(n)))
    x = x.reshape(b, g, g, d)
    conv = lambda c, name: nn.Conv(c, (3, 3), padding=1, dtype=self.dtype, name=name)
    x = nn.leaky_relu(conv(self.channels[0], "stem")(x), 0.2)
    for s, c in enumerate(self.channels):
      x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
      x = nn.leaky_relu(conv(c, f"up{s}_conv0")(x), 0.2)
      x = nn.leaky_relu(conv(c, f"up{s}_conv1")(x), 0.2)
    x = nn.Conv(3, (3, 3), padding=1, dtype=self.dtype, name="to_rgb")(x)
    return jnp.tanh(x.astype(jnp.float32)) * 0.5 + 0.5


class Normalizer(nn.Module):
  """F_nor(I_o, I_t) -> I_n; images float in [0, 1], (B, S, S, 3).

  The decoder needs log2(patch) stages so that the output has the input size.
  """
  encoder: str = "B/16"
  decoder_channels: Sequence[int] = (256, 128, 64, 32)
  emm_depth: int = 2
  dtype: Any = jnp.float32
  remat: bool = False
  attention: str = "auto"  # vit.attention_implementation
  remat_policy: str = ""   # vit.remat_block

  def setup(self):
    cfg = vit_lib.decode_variant(self.encoder)
    if 2 ** len(self.decoder_channels) != cfg["patch_size"]:
      raise ValueError(f"decoder_channels {tuple(self.decoder_channels)} give x"
                       f"{2 ** len(self.decoder_channels)} upsampling; patch size of "
                       f"{self.encoder} is {cfg['patch_size']}: need log2(patch) stages")
    self.shared_encoder = vit_lib.ViT(self.encoder, dtype=self.dtype, remat=self.remat,
                                      attention=self.attention,
                                      remat_policy=self.remat_policy, name="encoder")
    self.emm = ExpressionMerging(cfg["num_heads"], cfg["mlp_dim"], self.emm_depth, self.dtype,
                                 self.attention)
    self.decoder = ConvDecoder(tuple(self.decoder_channels), self.dtype)

  def __call__(self, image_o: jax.Array, image_t: jax.Array, *, train: bool) -> jax.Array:
    b = image_o.shape[0]
    x = jnp.concatenate([image_o, image_t]).astype(jnp.float32)
    tokens = self.shared_encoder(((x - MAE_MEAN) / MAE_STD).astype(self.dtype), train=train)
    e_o, e_t = tokens[:b], tokens[b:]  # eq. 1, one encoder pass for both
    return self.decoder(self.emm(e_o, e_t, train))


def normalize_uint8(generator: nn.Module, params: Any, target_u8: jax.Array,
                    images_u8: jax.Array) -> jax.Array:
  """I_n of a batch of uint8 faces onto one uint8 target face, (B, S, S, 3) -> uint8."""
  x_o = images_u8.astype(jnp.float32) / 255.0
  x_t = jnp.broadcast_to(target_u8.astype(jnp.float32) / 255.0, x_o.shape)
  y = generator.apply({"params": params}, x_o, x_t, train=False)
  return jnp.clip(jnp.round(y * 255.0), 0, 255).astype(jnp.uint8)
