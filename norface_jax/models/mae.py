"""Masked autoencoder (He et al., MAE) around the project ViT, for pre-training E_s / E_f.

The encoder is the project ViT run on the visible patches only (`MaskedViT`, a
subclass of `vit.ViT` with the same parameter tree: its params, under the name
`encoder`, initialise stage 2 through `init_from_key='encoder'`). The decoder is
MAE's: a linear embed to the decoder width, mask tokens put back in place, fixed
sin-cos positions, transformer blocks, a norm and a linear pixel predictor.

Shape letters: B batch, N patches, K kept (visible) patches, D encoder width,
E decoder width, P patch size, C channels.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from norface_jax.models import vit as vit_lib

Dtype = Any


def random_masking(rng: jax.Array, batch: int, num_patches: int,
                   mask_ratio: float) -> dict[str, jax.Array]:
  """MAE's per-sample random masking by argsort of uniform noise.

  Returns ids_keep (B, K) visible patch indices (in shuffled order), mask (B, N)
  with 1 on masked patches, ids_restore (B, N) the inverse shuffle.
  """
  keep = max(1, int(round(num_patches * (1.0 - mask_ratio))))
  noise = jax.random.uniform(rng, (batch, num_patches))
  ids_shuffle = jnp.argsort(noise, axis=1)
  ids_restore = jnp.argsort(ids_shuffle, axis=1)
  mask = jnp.ones((batch, num_patches), jnp.float32).at[:, :keep].set(0.0)
  mask = jnp.take_along_axis(mask, ids_restore, axis=1)
  return {"ids_keep": ids_shuffle[:, :keep], "mask": mask, "ids_restore": ids_restore}


def patchify(images_bhwc: jax.Array, patch: int) -> jax.Array:
  """(B, H, W, C) -> (B, N, P*P*C), patches row-major, pixels in (p, q, c) order as MAE."""
  b, h, w, c = images_bhwc.shape
  x = images_bhwc.reshape(b, h // patch, patch, w // patch, patch, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, (h // patch) * (w // patch), patch * patch * c)


def unpatchify(x_bnk: jax.Array, patch: int, grid_hw: tuple[int, int],
               channels: int = 3) -> jax.Array:
  """Inverse of `patchify`."""
  b = x_bnk.shape[0]
  gh, gw = grid_hw
  x = x_bnk.reshape(b, gh, gw, patch, patch, channels).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, gh * patch, gw * patch, channels)


def patch_targets(images_bhwc: jax.Array, patch: int, norm_pix: bool) -> jax.Array:
  """Reconstruction targets; with `norm_pix` each patch is standardised (MAE's
  normalized-pixel loss: unbiased variance, eps 1e-6)."""
  t = patchify(images_bhwc.astype(jnp.float32), patch)
  if not norm_pix:
    return t
  mean = t.mean(-1, keepdims=True)
  var = t.var(-1, keepdims=True, ddof=1)
  return (t - mean) / jnp.sqrt(var + 1e-6)


def reconstruction_loss(pred_bnk: jax.Array, target_bnk: jax.Array,
                        mask_bn: jax.Array) -> jax.Array:
  """Mean over masked patches of the per-patch mean squared error."""
  per_patch = jnp.mean((pred_bnk.astype(jnp.float32) - target_bnk) ** 2, axis=-1)
  return jnp.sum(per_patch * mask_bn) / jnp.maximum(jnp.sum(mask_bn), 1.0)


class MaskedViT(vit_lib.ViT):
  """`vit.ViT` that can encode only the patches `ids_keep` names (same params).

  With ids_keep=None it computes exactly what `vit.ViT` computes.
  """

  @nn.compact
  def __call__(self, images_bhwc: jax.Array, ids_keep: jax.Array | None = None, *,
               train: bool) -> jax.Array:
    """(B, H, W, C) images -> (B, 1 + K, D) tokens of the cls and kept patches."""
    cfg = vit_lib.decode_variant(self.variant)
    p, d = cfg["patch_size"], cfg["width"]
    b, h, w, _ = images_bhwc.shape
    if h % p or w % p:
      raise ValueError(f"Image size {(h, w)} not divisible by patch {p}.")
    x = vit_lib.PatchEmbed(p, d, self.dtype, self.param_dtype, name="patch_embed")(images_bhwc)
    pos = jnp.asarray(vit_lib.get_2d_sincos_pos_embed(d, (h // p, w // p)), x.dtype)
    x = x + pos[None, 1:]
    if ids_keep is not None:
      x = jnp.take_along_axis(x, ids_keep[:, :, None], axis=1)  # (B, K, D)
    cls = self.param("cls", nn.with_logical_partitioning(
        nn.initializers.normal(0.02), (None, None, "embed")), (1, 1, d), self.param_dtype)
    x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, d)).astype(x.dtype) + pos[None, :1], x],
                        axis=1)
    x = nn.Dropout(self.dropout_rate)(x, not train)
    return self._blocks(x, cfg, train)


class MAE(nn.Module):
  """Encoder on visible patches + lightweight decoder predicting every patch's pixels.

  Attributes:
    encoder: ViT variant ("B/16"); decoder_width / decoder_depth / decoder_heads:
      MAE's 512 / 8 / 16; mask_ratio: fraction of patches hidden (0.75).
  Call returns {'pred' (B, N, P*P*C), 'mask' (B, N), 'ids_restore' (B, N)}; the
  masking draws from the 'mask' rng collection.
  """
  encoder: str = "B/16"
  decoder_width: int = 512
  decoder_depth: int = 8
  decoder_heads: int = 16
  mask_ratio: float = 0.75
  channels: int = 3
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  remat: bool = False
  scan: bool = False
  attention: str = "auto"  # vit.attention_implementation
  remat_policy: str = ""   # vit.remat_block

  @nn.compact
  def __call__(self, images_bhwc: jax.Array, *, train: bool,
               mask_ratio: float | None = None) -> dict[str, jax.Array]:
    p = vit_lib.decode_variant(self.encoder)["patch_size"]
    b, h, w, _ = images_bhwc.shape
    grid = (h // p, w // p)
    n = grid[0] * grid[1]
    ratio = self.mask_ratio if mask_ratio is None else mask_ratio
    m = random_masking(self.make_rng("mask"), b, n, ratio)
    latent = MaskedViT(self.encoder, self.dtype, self.param_dtype, self.remat, self.scan,
                       attention=self.attention, remat_policy=self.remat_policy,
                       name="encoder")(images_bhwc, m["ids_keep"], train=train)
    e = self.decoder_width
    dense = lambda feats, name: nn.Dense(
        feats, dtype=self.dtype, param_dtype=self.param_dtype,
        kernel_init=nn.with_logical_partitioning(nn.initializers.xavier_uniform(),
                                                 (None, None)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (None,)), name=name)
    x = dense(e, "decoder_embed")(latent)  # (B, 1 + K, E)
    mask_token = self.param("mask_token", nn.with_logical_partitioning(
        nn.initializers.normal(0.02), (None, None, None)), (1, 1, e), self.param_dtype)
    k = x.shape[1] - 1
    tokens = jnp.concatenate(
        [x[:, 1:], jnp.broadcast_to(mask_token.astype(x.dtype), (b, n - k, e))], axis=1)
    tokens = jnp.take_along_axis(tokens, m["ids_restore"][:, :, None], axis=1)  # unshuffle
    x = jnp.concatenate([x[:, :1], tokens], axis=1)
    x = x + jnp.asarray(vit_lib.get_2d_sincos_pos_embed(e, grid), x.dtype)[None]
    for i in range(self.decoder_depth):
      x = vit_lib.Block(self.decoder_heads, 4 * e, dtype=self.dtype,
                        param_dtype=self.param_dtype, attention=self.attention,
                        name=f"decoder_block_{i}")(x, train)
    x = vit_lib._layer_norm("decoder_norm", self.dtype, self.param_dtype)(x)  # pylint: disable=protected-access
    pred = dense(p * p * self.channels, "decoder_pred")(x)[:, 1:]
    return {"pred": pred.astype(jnp.float32), "mask": m["mask"], "ids_restore": m["ids_restore"]}
