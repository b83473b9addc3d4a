"""ViT encoder (MAE / timm layout): the feature extractors E_s and E_f of Norface.

The module mirrors timm's `VisionTransformer` as used by MAE so that a
`timm`/MAE checkpoint maps onto it key by key (the importer lives in the interop
package). Shape letters: B batch, N tokens (1 + patches), D width, H heads,
Dh = D / H head width, M mlp width, L layers, P patch size, C channels.

Parameter mapping (Flax path (shape) <- timm key; `.T` a transpose; i a block):

  cls (1, 1, D)                    <- cls_token
  patch_embed/kernel (P, P, C, D)  <- patch_embed.proj.weight.permute(2, 3, 1, 0)
  patch_embed/bias (D,)            <- patch_embed.proj.bias
  block_i/norm1/{scale,bias}       <- blocks.i.norm1.{weight,bias}
  block_i/attn/qkv/kernel (D, 3, H, Dh)
                                   <- blocks.i.attn.qkv.weight.T.reshape(D, 3, H, Dh)
  block_i/attn/qkv/bias (3, H, Dh) <- blocks.i.attn.qkv.bias.reshape(3, H, Dh)
  block_i/attn/proj/kernel (H, Dh, D)
                                   <- blocks.i.attn.proj.weight.T.reshape(H, Dh, D)
  block_i/attn/proj/bias (D,)      <- blocks.i.attn.proj.bias
  block_i/norm2/{scale,bias}       <- blocks.i.norm2.{weight,bias}
  block_i/mlp/fc1/kernel (D, M)    <- blocks.i.mlp.fc1.weight.T  (bias: .bias)
  block_i/mlp/fc2/kernel (M, D)    <- blocks.i.mlp.fc2.weight.T  (bias: .bias)
  norm/{scale,bias}                <- norm.{weight,bias}

The position embedding is MAE's fixed 2-D sin-cos table by default (not a parameter
here; MAE stores it as a frozen `pos_embed` buffer, the importer may check it). With
`pos_embed="learned"` (timm's supervised ViTs) it is a parameter:

  pos_embedding (1, 1 + G*G, D)    <- pos_embed  (G: the grid of the init input)

resampled for another input grid like timm's `resample_abs_pos_embed` (the cls row kept,
the patch rows bicubic, antialiased: `resample_pos_embed`).

With `scan=True` the blocks live under one `blocks/...` subtree whose leaves have
a leading layer axis L (logical name 'layers'), e.g. `blocks/attn/qkv/kernel` is
(L, D, 3, H, Dh). `stack_block_params` / `unstack_block_params` convert between
the two layouts.

Logical axis names on parameters: 'embed' (D), 'heads' (H), 'kv' (Dh),
'mlp' (M), 'layers' (L); conv kernel spatial/channel dims and the fused q/k/v
axis are None.
"""

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from norface_jax.models.activation_sharding import constrain

Dtype = Any

ATTENTION_IMPLS = ("auto", "xla", "cudnn")
# Activations' logical axes (`activation_sharding`): tokens, and q/k/v heads.
_TOKENS = ("act_batch", "act_len", "act_embed")
_HEADS = ("act_batch", "act_len", "act_heads", "act_kv")


def attention_implementation(choice: str, dtype: Dtype) -> str:
  """`jax.nn.dot_product_attention`'s implementation for `choice` ("auto": cuDNN's fused
  kernel on a GPU in bfloat16 / float16, XLA's everywhere else)."""
  if choice not in ATTENTION_IMPLS:
    raise ValueError(f"attention={choice!r}; expected one of {ATTENTION_IMPLS}")
  if choice != "auto":
    return choice
  half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
  return "cudnn" if half and jax.default_backend() == "gpu" else "xla"


def remat_block(block_cls, policy: str = ""):
  """`nn.remat` of a block class; `policy` names a `jax.checkpoint_policies` member (e.g.
  "dots_with_no_batch_dims_saveable": keep the weight matmuls' outputs, recompute the
  rest), "" recomputes everything."""
  if policy and not hasattr(jax.checkpoint_policies, policy):
    raise ValueError(f"remat_policy={policy!r} is not in jax.checkpoint_policies")
  return nn.remat(block_cls, static_argnums=(2,),
                  policy=getattr(jax.checkpoint_policies, policy) if policy else None)

_VARIANTS = {
    # name: (width, depth, heads). mlp_dim is 4 * width.
    "mu": (32, 2, 2),  # tiny, for tests only
    "nano": (96, 4, 3),  # small enough for CPU runs (runlocal)
    "Ti": (192, 12, 3),
    "S": (384, 12, 6),
    "B": (768, 12, 12),
    "L": (1024, 24, 16),
}


def decode_variant(variant: str) -> dict[str, int]:
  """Parses "B/16"-style names into ViT sizes.

  Sizes: mu (tests only: width 32, depth 2, 2 heads), Ti 192/12/3, S 384/12/6,
  B 768/12/12, L 1024/24/16; mlp_dim = 4 * width; the number after "/" is the
  patch size (e.g. "mu/8", "Ti/16").
  """
  name, _, patch = variant.partition("/")
  if name not in _VARIANTS or not patch.isdigit():
    raise ValueError(f"Unknown ViT variant {variant!r}; "
                     f"expected one of {sorted(_VARIANTS)} + '/<patch>'.")
  width, depth, heads = _VARIANTS[name]
  return dict(width=width, depth=depth, num_heads=heads, mlp_dim=4 * width,
              patch_size=int(patch))


def get_1d_sincos_pos_embed(dim: int, pos: np.ndarray) -> np.ndarray:
  """MAE 1-D sin-cos table (P, dim): [sin(pos w_i), cos(pos w_i)].

  w_i = 10000^(-i / (dim/2)), i = 0 .. dim/2 - 1.
  """
  assert dim % 2 == 0
  omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
  out = np.einsum("m,d->md", pos.reshape(-1).astype(np.float64), omega)
  return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def get_2d_sincos_pos_embed(dim: int, grid_hw: tuple[int, int],
                            cls_token: bool = True) -> np.ndarray:
  """MAE's fixed 2-D position table, (1 + gh * gw, dim) with a zero cls row.

  As in MAE, the first dim/2 channels encode the column (w) index and the last
  dim/2 the row (h) index; patches are in row-major (h, w) order.
  """
  assert dim % 4 == 0, "2-D sin-cos needs width divisible by 4"
  gh, gw = grid_hw
  grid_w, grid_h = np.meshgrid(np.arange(gw, dtype=np.float64),
                               np.arange(gh, dtype=np.float64))  # (gh, gw) each
  emb = np.concatenate([get_1d_sincos_pos_embed(dim // 2, grid_w),
                        get_1d_sincos_pos_embed(dim // 2, grid_h)], axis=1)
  if cls_token:
    emb = np.concatenate([np.zeros((1, dim)), emb], axis=0)
  return emb.astype(np.float32)


def _cubic_kernel(x: np.ndarray, a: float = -0.5) -> np.ndarray:
  x = np.abs(x)
  return np.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                  np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0))


def bicubic_resize_matrix(n_in: int, n_out: int) -> np.ndarray:
  """(n_out, n_in) weights of PyTorch's antialiased bicubic resize along one axis.

  `F.interpolate(mode="bicubic", antialias=True, align_corners=False)`, what timm's
  `resample_abs_pos_embed` calls: Keys cubic (a = -0.5) stretched by the scale when
  shrinking, taps outside the input dropped and the rest renormalised (as PIL).
  """
  scale = n_in / n_out
  support = 2.0 * max(scale, 1.0)
  inv = 1.0 / max(scale, 1.0)
  w = np.zeros((n_out, n_in))
  for i in range(n_out):
    center = scale * (i + 0.5)
    lo = max(int(center - support + 0.5), 0)
    hi = min(int(center + support + 0.5), n_in)
    k = _cubic_kernel((np.arange(lo, hi) - center + 0.5) * inv)
    w[i, lo:hi] = k / k.sum()
  return w


def resample_pos_embed(pos_1nd, grid_hw: tuple[int, int]):
  """A (1, 1 + g*g, D) table (square grid g, cls row first) -> (1, 1 + gh*gw, D).

  The patch rows are resized as an image (`bicubic_resize_matrix`), the cls row kept.
  NumPy in, NumPy out (float32); a JAX array in, a JAX array out.
  """
  n, d = pos_1nd.shape[1], pos_1nd.shape[2]
  g = int(round(np.sqrt(n - 1)))
  if g * g != n - 1:
    raise ValueError(f"position table of {n} rows is not 1 + a square grid")
  if (g, g) == tuple(grid_hw):
    return pos_1nd
  mh = bicubic_resize_matrix(g, grid_hw[0])
  mw = bicubic_resize_matrix(g, grid_hw[1])
  if isinstance(pos_1nd, np.ndarray):
    grid = np.einsum("oh,pw,hwd->opd", mh, mw, pos_1nd[0, 1:].reshape(g, g, d).astype(np.float64))
    return np.concatenate([pos_1nd[:, :1], grid.reshape(1, -1, d).astype(pos_1nd.dtype)], axis=1)
  grid = jnp.einsum("oh,pw,hwd->opd", mh.astype(np.float32), mw.astype(np.float32),
                    pos_1nd[0, 1:].reshape(g, g, d).astype(jnp.float32),
                    precision=jax.lax.Precision.HIGHEST)
  return jnp.concatenate([pos_1nd[:, :1], grid.reshape(1, -1, d).astype(pos_1nd.dtype)], axis=1)


def _drop_path(x, rate: float, deterministic: bool, module: nn.Module):
  """Stochastic depth: drops whole samples' residual branches (timm)."""
  if deterministic or rate == 0.0:
    return x
  keep = 1.0 - rate
  mask = jax.random.bernoulli(module.make_rng("dropout"), keep,
                              (x.shape[0],) + (1,) * (x.ndim - 1))
  return jnp.where(mask, x / keep, jnp.zeros_like(x))


_xavier = nn.initializers.xavier_uniform()
_zeros = nn.initializers.zeros


class PatchEmbed(nn.Module):
  """timm's strided P x P patch convolution, computed as a reshape into (B, N, P*P*C)
  patches and one matmul with the (P, P, C, D) kernel: the same tokens in row-major (h,
  w) order, and 5-7x faster forward + backward than the convolution on XLA:CPU
  (`python -m norface_jax.benchmark.patch_embed`). Parameters as `nn.Conv`'s:
  `kernel` (P, P, C, D), `bias` (D,)."""
  patch: int
  width: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images_bhwc: jax.Array) -> jax.Array:
    b, h, w, c = images_bhwc.shape
    p = self.patch
    kernel = self.param("kernel", nn.with_logical_partitioning(
        _xavier_conv, (None, None, None, "embed")), (p, p, c, self.width), self.param_dtype)
    bias = self.param("bias", nn.with_logical_partitioning(_zeros, ("embed",)),
                      (self.width,), self.param_dtype)
    x = images_bhwc.astype(self.dtype).reshape(b, h // p, p, w // p, p, c)
    x = x.transpose(0, 1, 3, 2, 4, 5).reshape(b, (h // p) * (w // p), p * p * c)
    y = x @ kernel.astype(self.dtype).reshape(p * p * c, self.width)
    return y + bias.astype(self.dtype)


class Attention(nn.Module):
  """Multi-head self-attention with a fused q/k/v projection (timm order).

  q, k and v come out of the projection as (B, N, H, Dh), the layout
  `jax.nn.dot_product_attention` takes, so nothing is transposed; `attention` picks its
  implementation (`attention_implementation`)."""
  num_heads: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  attention: str = "auto"

  @nn.compact
  def __call__(self, x_bnd: jax.Array) -> jax.Array:
    d = x_bnd.shape[-1]
    dh = d // self.num_heads
    qkv = nn.DenseGeneral(
        (3, self.num_heads, dh), dtype=self.dtype, param_dtype=self.param_dtype,
        kernel_init=nn.with_logical_partitioning(
            _xavier, ("embed", None, "heads", "kv")),
        bias_init=nn.with_logical_partitioning(_zeros, (None, "heads", "kv")),
        name="qkv")(x_bnd)  # (B, N, 3, H, Dh)
    q, k, v = (constrain(qkv[:, :, i], _HEADS) for i in range(3))
    o_bnhk = jax.nn.dot_product_attention(
        q, k, v, implementation=attention_implementation(self.attention, q.dtype))
    o_bnhk = constrain(o_bnhk, _HEADS)
    return nn.DenseGeneral(
        d, axis=(-2, -1), dtype=self.dtype, param_dtype=self.param_dtype,
        kernel_init=nn.with_logical_partitioning(
            _xavier, ("heads", "kv", "embed")),
        bias_init=nn.with_logical_partitioning(_zeros, ("embed",)),
        name="proj")(o_bnhk)


class Mlp(nn.Module):
  """timm Mlp: fc1 -> exact GELU -> fc2."""
  mlp_dim: int
  dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
    d = x.shape[-1]
    dense = lambda n, axes, name: nn.Dense(
        n, dtype=self.dtype, param_dtype=self.param_dtype,
        kernel_init=nn.with_logical_partitioning(_xavier, axes),
        bias_init=nn.with_logical_partitioning(_zeros, axes[1:]), name=name)
    x = dense(self.mlp_dim, ("embed", "mlp"), "fc1")(x)
    x = constrain(x, ("act_batch",) + ("act_len",) * (x.ndim - 2) + ("act_mlp",))
    x = nn.gelu(x, approximate=False)
    x = nn.Dropout(self.dropout_rate)(x, deterministic)
    x = dense(d, ("mlp", "embed"), "fc2")(x)
    return nn.Dropout(self.dropout_rate)(x, deterministic)


def _layer_norm(name: str, dtype: Dtype, param_dtype: Dtype) -> nn.LayerNorm:
  return nn.LayerNorm(
      epsilon=1e-6, dtype=dtype, param_dtype=param_dtype, name=name,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
      bias_init=nn.with_logical_partitioning(_zeros, ("embed",)))


class Block(nn.Module):
  """Pre-norm transformer block: x + attn(norm1(x)); x + mlp(norm2(x))."""
  num_heads: int
  mlp_dim: int
  dropout_rate: float = 0.0
  drop_path_rate: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  attention: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    det = not train
    ln = lambda name: _layer_norm(name, self.dtype, self.param_dtype)
    x = constrain(x, _TOKENS)
    y = Attention(self.num_heads, self.dtype, self.param_dtype, self.attention,
                  name="attn")(ln("norm1")(x))
    y = nn.Dropout(self.dropout_rate)(y, det)
    x = constrain(x + _drop_path(y, self.drop_path_rate, det, self), _TOKENS)
    y = Mlp(self.mlp_dim, self.dropout_rate, self.dtype, self.param_dtype,
            name="mlp")(ln("norm2")(x), det)
    return constrain(x + _drop_path(y, self.drop_path_rate, det, self), _TOKENS)


class _ScanBlock(Block):
  """Block with the (carry, out) signature `nn.scan` expects; same params."""

  def __call__(self, x: jax.Array, train: bool):
    return super().__call__(x, train), None


class ViT(nn.Module):
  """MAE/timm ViT encoder returning all tokens after the final LayerNorm.

  Attributes:
    variant: e.g. "B/16" (see `decode_variant`).
    dtype: compute dtype; param_dtype: parameter dtype.
    remat: rematerialise each block in the backward pass (saves memory);
      remat_policy: what it keeps (`remat_block`).
    attention: the attention implementation (`attention_implementation`).
    scan: `nn.scan` over blocks (params stacked on a leading 'layers' axis;
      faster compiles for deep models).
    dropout_rate / drop_path_rate: timm's proj/mlp dropout and stochastic
      depth (the same drop-path rate in every block when scanned; a linear
      ramp 0..rate over depth otherwise, as timm).
    pos_embed: "sincos" (MAE's fixed table, no parameter) or "learned" (a
      `pos_embedding` parameter for the init input's grid, resampled for others).
  """
  variant: str = "B/16"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  remat: bool = False
  scan: bool = False
  dropout_rate: float = 0.0
  drop_path_rate: float = 0.0
  pos_embed: str = "sincos"
  attention: str = "auto"
  remat_policy: str = ""

  @nn.compact
  def __call__(self, images_bhwc: jax.Array, *, train: bool) -> jax.Array:
    """Encodes (B, H, W, C) float images (already normalised) to (B, 1+N, D)."""
    cfg = decode_variant(self.variant)
    p, d = cfg["patch_size"], cfg["width"]
    b, h, w, _ = images_bhwc.shape
    if h % p or w % p:
      raise ValueError(f"Image size {(h, w)} not divisible by patch {p}.")
    x = PatchEmbed(p, d, self.dtype, self.param_dtype, name="patch_embed")(images_bhwc)
    cls = self.param("cls", nn.with_logical_partitioning(
        nn.initializers.normal(0.02), (None, None, "embed")),
                     (1, 1, d), self.param_dtype)
    x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, d)).astype(x.dtype), x],
                        axis=1)
    x = x + self._position_table(d, (h // p, w // p)).astype(x.dtype)
    x = nn.Dropout(self.dropout_rate)(x, not train)
    return self._blocks(x, cfg, train)

  def _blocks(self, x: jax.Array, cfg: dict[str, int], train: bool) -> jax.Array:
    """The transformer blocks and the final LayerNorm over (B, N, D) tokens."""
    kw = dict(num_heads=cfg["num_heads"], mlp_dim=cfg["mlp_dim"],
              dropout_rate=self.dropout_rate, dtype=self.dtype,
              param_dtype=self.param_dtype, attention=self.attention)
    depth = cfg["depth"]
    if self.scan:
      block_cls = _ScanBlock
      if self.remat:
        block_cls = remat_block(block_cls, self.remat_policy)
      x, _ = nn.scan(
          block_cls, variable_axes={"params": 0},
          split_rngs={"params": True, "dropout": True},
          in_axes=(nn.broadcast,), length=depth,
          metadata_params={nn.PARTITION_NAME: "layers"})(
              drop_path_rate=self.drop_path_rate, name="blocks", **kw)(x, train)
    else:
      block_cls = remat_block(Block, self.remat_policy) if self.remat else Block
      for i in range(depth):
        rate = self.drop_path_rate * i / max(depth - 1, 1)
        x = block_cls(drop_path_rate=rate, name=f"block_{i}", **kw)(x, train)
    return _layer_norm("norm", self.dtype, self.param_dtype)(x)

  def _position_table(self, d: int, grid_hw: tuple[int, int]) -> jax.Array:
    """(1, 1 + gh*gw, D): the sin-cos table, or the learned one resampled to the grid."""
    if self.pos_embed == "sincos":
      return jnp.asarray(get_2d_sincos_pos_embed(d, grid_hw, cls_token=True))[None]
    if self.pos_embed != "learned":
      raise ValueError(f"Unknown pos_embed {self.pos_embed!r}; expected 'sincos' or 'learned'.")
    n = 1 + grid_hw[0] * grid_hw[1]
    shape = (1, n, d)  # Created for this grid; a stored table keeps its own.
    if self.has_variable("params", "pos_embedding"):
      shape = np.shape(nn.unbox(self.get_variable("params", "pos_embedding")))
    table = self.param("pos_embedding", nn.with_logical_partitioning(
        nn.initializers.normal(0.02), (None, None, "embed")), shape, self.param_dtype)
    if table.shape[1] == n and (grid_hw[0] == grid_hw[1] or
                                round(np.sqrt(n - 1)) ** 2 != n - 1):
      return table
    return resample_pos_embed(table, grid_hw)


def _xavier_conv(key, shape, dtype=jnp.float32):
  """MAE's patch-embed init: xavier_uniform on the kernel as (P*P*C, D)."""
  flat = _xavier(key, (int(np.prod(shape[:-1])), shape[-1]), dtype)
  return flat.reshape(shape)


def stack_block_params(params: Mapping[str, Any],
                       depth: int) -> dict[str, Any]:
  """Converts a non-scan param tree (block_0..block_{L-1}) to scan layout."""
  params = dict(params)
  blocks = [params.pop(f"block_{i}") for i in range(depth)]
  params["blocks"] = jax.tree.map(lambda *xs: jnp.stack(xs), *blocks)
  return params


def unstack_block_params(params: Mapping[str, Any]) -> dict[str, Any]:
  """Converts a scan param tree (blocks with leading L axis) to block_{i}."""
  params = dict(params)
  blocks = params.pop("blocks")
  depth = jax.tree.leaves(blocks)[0].shape[0]
  for i in range(depth):
    params[f"block_{i}"] = jax.tree.map(lambda x, i=i: x[i], blocks)
  return params

