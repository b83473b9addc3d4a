"""Tests for the noisy top-k router, the MoE block and the router losses."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from norface_jax.losses import moe as moe_losses
from norface_jax.models.moe import MoEBlock, NoisyTopKRouter

# Two tokens, D=2, E=3 experts, W_g fixed by hand:
#   W_g = [[1, 0, -1], [0, 1, 0]]
#   x1 = [1, 0]  -> logits [1, 0, -1]; exp [2.71828, 1, 0.36788], sum 4.08616
#               -> probs [0.66524, 0.24473, 0.09003]; top-2 = experts {0, 1}
#   x2 = [-1, 2] -> logits [-1, 2, 1]; exp [0.36788, 7.38906, 2.71828], sum 10.47522
#               -> probs [0.03512, 0.70538, 0.25950]; top-2 = experts {1, 2}
W_G = jnp.array([[1.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
X = jnp.array([[1.0, 0.0], [-1.0, 2.0]])
PROBS = np.array([[0.66524, 0.24473, 0.09003], [0.03512, 0.70538, 0.25950]])
GATES = np.array([[0.66524, 0.24473, 0.0], [0.0, 0.70538, 0.25950]])


def _router_params(w_noise=None):
  w_noise = jnp.zeros((2, 3)) if w_noise is None else w_noise
  return {"params": {"w_gate": W_G, "w_noise": w_noise}}


def test_router_by_hand():
  aux = NoisyTopKRouter(3, 2).apply(_router_params(), X, train=False)
  np.testing.assert_allclose(aux["probs"], PROBS, atol=1e-5)
  np.testing.assert_allclose(aux["gates"], GATES, atol=1e-5)
  np.testing.assert_array_equal(aux["topk_idx"], [[0, 1], [1, 2]])
  # load: expert 0 chosen by 1 token, expert 1 by 2, expert 2 by 1; / T=2.
  np.testing.assert_allclose(aux["load"], [0.5, 1.0, 0.5])
  # gate_mass = column means of GATES: [0.66524/2, (0.24473+0.70538)/2, 0.25950/2]
  np.testing.assert_allclose(aux["gate_mass"], [0.33262, 0.475055, 0.12975],
                             atol=1e-5)


def test_router_renormalize():
  # Renormalised top-2: token 1 softmax([1, 0]) = [0.73106, 0.26894],
  # token 2 softmax([2, 1]) on experts 1, 2.
  aux = NoisyTopKRouter(3, 2, renormalize=True).apply(_router_params(), X,
                                                      train=False)
  np.testing.assert_allclose(
      aux["gates"], [[0.73106, 0.26894, 0.0], [0.0, 0.73106, 0.26894]], atol=1e-5)


def test_router_noise_only_in_train():
  router = NoisyTopKRouter(3, 2)
  params = _router_params()  # W_noise = 0 -> noise std softplus(0) = 0.693
  ev = router.apply(params, X, train=False)["probs"]
  tr = lambda k: router.apply(params, X, train=True,
                              rngs={"router": jax.random.key(k)})["probs"]
  assert not np.allclose(tr(0), ev, atol=1e-3)
  assert not np.allclose(tr(0), tr(1), atol=1e-3)
  np.testing.assert_array_equal(tr(0), tr(0))
  # Noise is scaled by Softplus(x W_noise): ~0 for very negative x W_noise.
  w_noise = jnp.array([[-60.0] * 3, [-60.0] * 3])
  x_pos = jnp.abs(X)
  quiet = router.apply(_router_params(w_noise), x_pos, train=True,
                       rngs={"router": jax.random.key(0)})["probs"]
  np.testing.assert_allclose(
      quiet, router.apply(_router_params(w_noise), x_pos, train=False)["probs"],
      atol=1e-6)
  # noisy=False: train equals eval and needs no rng.
  off = NoisyTopKRouter(3, 2, noisy=False).apply(params, X, train=True)
  np.testing.assert_allclose(off["probs"], ev)


def _random_block_params(block, x, seed=0):
  params = nn.unbox(block.init({"params": jax.random.key(seed)}, x,
                               train=False))["params"]
  # Router starts at zero: give it a signal so routing is non-trivial.
  keys = iter(jax.random.split(jax.random.key(seed + 1), 8))
  if "router" in params:
    params["router"] = jax.tree.map(
        lambda a: jax.random.normal(next(keys), a.shape), params["router"])
  if "norm" in params:
    params["norm"] = jax.tree.map(
        lambda a: a + 0.1 * jax.random.normal(next(keys), a.shape),
        params["norm"])
  return {"params": params}


def _manual_expert(p, e, h):
  """Expert e applied with plain NumPy from the stacked params."""
  erf = np.vectorize(math.erf)
  z = h @ np.asarray(p["wi"][e]) + np.asarray(p["bi"][e])
  z = 0.5 * z * (1 + erf(z / np.sqrt(2)))  # exact GELU
  return z @ np.asarray(p["wo"][e]) + np.asarray(p["bo"][e])


@pytest.mark.parametrize("residual", [True, False])
def test_k_equals_m_is_softmax_weighted_sum(residual):
  x = np.asarray(jax.random.normal(jax.random.key(5), (6, 8)))
  block = MoEBlock(num_experts=3, top_k=3, hidden_dim=16, residual=residual)
  variables = _random_block_params(block, x)
  p = variables["params"]
  out, aux = block.apply(variables, x, train=False)
  h = x
  if residual:
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    h = (x - mu) / np.sqrt(var + 1e-6) * np.asarray(p["norm"]["scale"]) + \
        np.asarray(p["norm"]["bias"])
  logits = h @ np.asarray(p["router"]["w_gate"])
  probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  y = sum(probs[:, e:e + 1] * _manual_expert(p["experts"], e, h) for e in range(3))
  expected = x + y if residual else y
  np.testing.assert_allclose(aux["gates"], probs, atol=1e-5)
  np.testing.assert_allclose(out, expected, atol=1e-4)


def test_dense_and_gather_dispatch_identical():
  x = jax.random.normal(jax.random.key(6), (3, 5, 16))  # (B, N, D): T = 15
  dense = MoEBlock(num_experts=4, top_k=2, hidden_dim=24)
  gather = MoEBlock(num_experts=4, top_k=2, hidden_dim=24, dispatch="gather")
  variables = _random_block_params(dense, x)
  rngs = {"router": jax.random.key(3)}
  out_d, aux_d = dense.apply(variables, x, train=True, rngs=rngs)
  out_g, aux_g = gather.apply(variables, x, train=True, rngs=rngs)
  assert out_d.shape == x.shape and aux_d["gates"].shape == (15, 4)
  assert aux_d["topk_idx"].shape == (15, 2)
  np.testing.assert_allclose(out_d, out_g, atol=1e-5)
  jax.tree.map(np.testing.assert_array_equal, aux_d, aux_g)
  loss = lambda m: jax.jit(jax.grad(lambda v: jnp.sum(
      m.apply(v, x, train=True, rngs=rngs)[0] ** 2)))(variables)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4),
               loss(dense), loss(gather))


def test_no_experts_is_dense_mlp():
  x = jnp.ones((4, 8))
  block = MoEBlock(num_experts=0)
  variables = block.init(jax.random.key(0), x, train=False)
  assert set(variables["params"]) == {"norm", "mlp"}
  out, aux = block.apply(variables, x, train=True)
  assert out.shape == x.shape and aux == {}


def test_expert_axis_is_logical():
  x = jnp.ones((4, 8))
  specs = nn.get_partition_spec(jax.eval_shape(
      lambda: MoEBlock(num_experts=4).init(jax.random.key(0), x, train=False)))
  assert tuple(specs["params"]["experts"]["wi"]) == ("experts", "embed", "mlp")


def test_importance_loss_by_hand():
  # Per-expert gate sums I = [0.8, 0.4, 0.8], mean 2/3,
  # population var = ((2/15)^2 + (4/15)^2 + (2/15)^2) / 3 = 8/225,
  # L = var / mean^2 = (8/225) / (4/9) = 0.08.
  gates = jnp.array([[0.6, 0.4, 0.0], [0.2, 0.0, 0.8]])
  np.testing.assert_allclose(moe_losses.importance_loss(gates), 0.08, rtol=1e-5)
  # Balanced importance -> 0.
  np.testing.assert_allclose(
      moe_losses.importance_loss(jnp.array([[0.5, 0.5], [0.5, 0.5]])), 0.0)


def test_entropy_losses_by_hand():
  # p1 = [1, 0], p2 = [0.5, 0.5]; mean = [0.75, 0.25]
  # H(mean) = -(0.75 ln 0.75 + 0.25 ln 0.25) = 0.215762 + 0.346574 = 0.562335
  # local = (H(p1) + H(p2)) / 2 = (0 + ln 2) / 2 = 0.346574
  probs = jnp.array([[1.0, 0.0], [0.5, 0.5]])
  np.testing.assert_allclose(moe_losses.global_entropy_loss(probs), -0.562335,
                             rtol=1e-5)
  np.testing.assert_allclose(moe_losses.local_entropy_loss(probs), 0.346574,
                             rtol=1e-5)
  g = jax.grad(lambda p: moe_losses.local_entropy_loss(p)
               + moe_losses.global_entropy_loss(p))(probs)
  assert bool(jnp.all(jnp.isfinite(g)))


@pytest.mark.parametrize("residual", [True, False])
def test_stage2_config_selects_the_moe_form(residual):
  """config.model.moe_residual=False builds the paper's plain y = sum_k G_k Exp_k(x) in
  every MoE block (no pre-norm parameters), True the pre-norm residual form."""
  from norface_jax.training import stage2, stage2_config
  c = stage2_config.task_config("synthetic,runlocal", task="fer", dataset="affectnet")
  c.model.moe_residual = residual
  model = stage2.make_model(c, stage2.make_task(c))
  x = jnp.zeros((2, 64, 64, 3))
  params = jax.eval_shape(lambda: model.init({"params": jax.random.key(0),
                                              "router": jax.random.key(1)}, x, x,
                                             train=False))["params"]
  blocks = sorted(k for k in params if "moe" in k)
  assert blocks == ["input_moe_norm", "input_moe_orig", "output_moe"]
  assert all(("norm" in params[b]) == residual for b in blocks)
