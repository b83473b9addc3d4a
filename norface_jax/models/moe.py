"""The MoE block of Norface's classifier: noisy top-k router + vmapped MLP experts.

G(x) = TopK(Softmax(x W_g + N(0, 1) * Softplus(x W_noise)))   (noise in train only)
y(x) = sum_e G_e(x) Exp_e(x)

Shape letters: T tokens (all leading input dims flattened), D width,
F expert hidden width, E experts, K top-k, A assignments (T * K).

Parameter tree of `MoEBlock` (num_experts > 0):
  norm/{scale,bias}            (D,)               pre-norm (residual=True only)
  router/w_gate, w_noise       (D, E)             logical ('embed', None)
  experts/wi (E, D, F), bi (E, F), wo (E, F, D), bo (E, D)
                               logical ('experts', 'embed', 'mlp') etc.
With num_experts == 0 ("no MoE" ablation): norm + mlp/{wi,bi,wo,bo} unstacked.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from norface_jax.models.activation_sharding import constrain

_TOKENS = ("act_batch", "act_embed")  # (T, D): the tokens routed (activation_sharding).

Dtype = Any
Aux = dict[str, jax.Array]

_xavier = nn.initializers.xavier_uniform()
_zeros = nn.initializers.zeros


class MlpExpert(nn.Module):
  """One expert: Dense(F) -> exact GELU -> Dense(D), with explicit params.

  Params are created directly (not via nn.Dense) so that the vmapped stack can
  also be read as arrays by `stacked_params` for the gather dispatch.
  """
  hidden_dim: int
  width: int  # D, input and output width
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    d, f = self.width, self.hidden_dim
    p = lambda name, init, shape, axes: self.param(
        name, nn.with_logical_partitioning(init, axes), shape, self.param_dtype)
    self.wi = p("wi", _xavier, (d, f), ("embed", "mlp"))
    self.bi = p("bi", _zeros, (f,), ("mlp",))
    self.wo = p("wo", _xavier, (f, d), ("mlp", "embed"))
    self.bo = p("bo", _zeros, (d,), ("embed",))

  def __call__(self, x_td: jax.Array) -> jax.Array:
    wi, bi, wo, bo = (a.astype(self.dtype) for a in self.stacked_params())
    h = nn.gelu(x_td.astype(self.dtype) @ wi + bi, approximate=False)
    return h @ wo + bo

  def stacked_params(self) -> tuple[jax.Array, ...]:
    """(wi, bi, wo, bo); under the expert vmap each gains a leading E axis."""
    return self.wi, self.bi, self.wo, self.bo


def _experts(num_experts: int, in_axes) -> type[nn.Module]:
  """MlpExpert vmapped over a leading expert axis (logical name 'experts')."""
  return nn.vmap(
      MlpExpert, variable_axes={"params": 0}, split_rngs={"params": True},
      in_axes=in_axes, out_axes=0, axis_size=num_experts,
      metadata_params={nn.PARTITION_NAME: "experts"},
      methods=["__call__", "stacked_params"])


class NoisyTopKRouter(nn.Module):
  """Shazeer et al.'s noisy top-k gate; computes in float32.

  W_g and W_noise start at zero (as in Shazeer et al.): no signal and
  Softplus(0) ~ 0.69 noise at the start of training.

  Attributes:
    num_experts: E.  top_k: K.
    noisy: add N(0,1) * Softplus(x W_noise) to the logits when train=True
      (draws from the 'router' rng collection).
    renormalize: divide the kept top-k probabilities by their sum (off by
      default: the paper keeps the raw softmax values).
  """
  num_experts: int
  top_k: int
  noisy: bool = True
  renormalize: bool = False
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_td: jax.Array, *, train: bool) -> Aux:
    d, e = x_td.shape[-1], self.num_experts
    w = lambda name: self.param(
        name, nn.with_logical_partitioning(_zeros, ("embed", None)), (d, e),
        self.param_dtype)
    x_td = x_td.astype(jnp.float32)
    logits_te = x_td @ w("w_gate").astype(jnp.float32)
    w_noise = w("w_noise")  # created even when not noisy: same param tree
    if self.noisy and train:
      noise_std_te = jax.nn.softplus(x_td @ w_noise.astype(jnp.float32))
      eps_te = jax.random.normal(self.make_rng("router"), logits_te.shape)
      logits_te = logits_te + eps_te * noise_std_te
    probs_te = jax.nn.softmax(logits_te, axis=-1)
    vals_tk, idx_tk = jax.lax.top_k(probs_te, self.top_k)
    if self.renormalize:
      vals_tk = vals_tk / jnp.sum(vals_tk, axis=-1, keepdims=True)
    onehot_tke = jax.nn.one_hot(idx_tk, e, dtype=jnp.float32)
    gates_te = jnp.einsum("tk,tke->te", vals_tk, onehot_tke)
    t = x_td.shape[0]
    return {
        "gates": gates_te,
        "probs": probs_te,
        "topk_idx": idx_tk,
        "topk_vals": vals_tk,
        "load": jnp.sum(onehot_tke, axis=(0, 1)) / t,
        "gate_mass": jnp.mean(gates_te, axis=0),
    }


def _gather_combine(x_td, idx_tk, vals_tk, wi, bi, wo, bo, dtype):
  """Sparse experts: each token runs only its K experts (grouped matmul).

  Assignments (t, k) are sorted by expert so that `jax.lax.ragged_dot` runs one
  contiguous group per expert; FLOPs scale with K rather than E.
  """
  t, k = idx_tk.shape
  e = wi.shape[0]
  expert_a = idx_tk.reshape(-1)
  order_a = jnp.argsort(expert_a, stable=True)
  token_a = order_a // k  # token of each sorted assignment
  sizes_e = jnp.bincount(expert_a, length=e).astype(jnp.int32)
  x_ad = x_td.astype(dtype)[token_a]
  e_a = expert_a[order_a]
  wi, bi, wo, bo = (a.astype(dtype) for a in (wi, bi, wo, bo))
  h_af = jax.lax.ragged_dot(x_ad, wi, sizes_e) + bi[e_a]
  h_af = nn.gelu(h_af, approximate=False)
  y_ad = jax.lax.ragged_dot(h_af, wo, sizes_e) + bo[e_a]
  w_a = vals_tk.reshape(-1)[order_a].astype(dtype)
  y_td = jnp.zeros((t, y_ad.shape[-1]), dtype)
  return y_td.at[token_a].add(w_a[:, None] * y_ad)


class MoEBlock(nn.Module):
  """Noisy top-k mixture of MLP experts, optionally wrapped pre-norm residual.

  residual=True: out = x + y(LN(x)) (LayerNorm eps 1e-6); residual=False:
  out = y(x), the paper's formula literally. num_experts=0 replaces y by one
  dense MLP (the "no MoE" ablation) and returns aux = {}.

  dispatch="dense" runs every expert on every token and combines with the
  sparse gates; dispatch="gather" runs each token only through its top-k
  experts. Both give the same outputs for the same params.

  Returns (out, aux); aux (num_experts > 0) holds 'gates' (T, E) sparse gate
  values, 'probs' (T, E) router softmax p(E|x), 'topk_idx' (T, K), 'topk_vals'
  (T, K), 'load' (E,) top-k counts / T, 'gate_mass' (E,) mean gate value.
  """
  num_experts: int = 4
  top_k: int = 2
  hidden_dim: int | None = None  # None: the input width
  router_noise: bool = True
  renormalize: bool = False
  dispatch: str = "dense"
  residual: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> tuple[jax.Array, Aux]:
    lead, d = x.shape[:-1], x.shape[-1]
    f = self.hidden_dim or d
    x_td = constrain(x.reshape(-1, d), _TOKENS)
    h_td = x_td
    if self.residual:
      h_td = nn.LayerNorm(
          epsilon=1e-6, dtype=self.dtype, param_dtype=self.param_dtype,
          scale_init=nn.with_logical_partitioning(nn.initializers.ones,
                                                  ("embed",)),
          bias_init=nn.with_logical_partitioning(_zeros, ("embed",)),
          name="norm")(x_td)
    if self.num_experts == 0:
      y_td = MlpExpert(f, d, self.dtype, self.param_dtype, name="mlp")(h_td)
      aux = {}
    else:
      if not 0 < self.top_k <= self.num_experts:
        raise ValueError(f"top_k={self.top_k} with {self.num_experts} experts.")
      aux = NoisyTopKRouter(self.num_experts, self.top_k, self.router_noise,
                            self.renormalize, self.param_dtype,
                            name="router")(h_td, train=train)
      experts = _experts(self.num_experts, in_axes=None)(
          f, d, self.dtype, self.param_dtype, name="experts")
      if self.dispatch == "dense":
        y_etd = constrain(experts(h_td), ("act_experts", "act_batch", "act_embed"))
        y_td = jnp.einsum("te,etd->td", aux["gates"].astype(self.dtype), y_etd)
      elif self.dispatch == "gather":
        y_td = _gather_combine(h_td, aux["topk_idx"], aux["topk_vals"],
                               *experts.stacked_params(), self.dtype)
      else:
        raise ValueError(f"Unknown dispatch {self.dispatch!r}.")
    out = constrain(x_td.astype(self.dtype) + y_td if self.residual else y_td, _TOKENS)
    return out.reshape(*lead, d), aux
