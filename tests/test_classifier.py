"""Tests for Norface's classifier F_cla and its ablations."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from norface_jax.models.classifier import NorfaceClassifier

B, HW = 2, 16
X_O = jax.random.normal(jax.random.key(0), (B, HW, HW, 3))
X_N = jax.random.normal(jax.random.key(1), (B, HW, HW, 3))
RNGS = {"params": jax.random.key(2), "router": jax.random.key(3),
        "dropout": jax.random.key(4)}

ABLATIONS = {
    "full": dict(),
    "orig_only": dict(streams=("orig",)),
    "no_input_moe": dict(use_input_moe=False),
    "no_output_moe": dict(use_output_moe=False),
    "no_moe": dict(num_experts=0),
    "m2_k1": dict(num_experts=2, top_k=1, pool="gap", dispatch="gather"),
}


def _model(**kw):
  return NorfaceClassifier("mu/8", num_outputs=5, **kw)


@pytest.mark.parametrize("name", list(ABLATIONS))
def test_ablation_shapes_and_grads(name):
  kw = ABLATIONS[name]
  model = _model(**kw)
  x_n = None if kw.get("streams") == ("orig",) else X_N
  variables = jax.jit(lambda: model.init(RNGS, X_O, x_n, train=False))()
  params = nn.unbox(variables)["params"]
  out, aux = jax.jit(lambda p: model.apply({"params": p}, X_O, x_n,
                                           train=False))(params)
  assert out.shape == (B, 5)
  streams = kw.get("streams", ("orig", "norm"))
  expected = set()
  if kw.get("use_input_moe", True):
    expected |= {f"input_moe/{s}" for s in streams}
  if kw.get("use_output_moe", True):
    expected.add("output_moe")
  assert set(aux) == expected
  m = kw.get("num_experts", 4)
  for a in aux.values():
    if m == 0:
      assert a == {}
    else:
      assert a["gates"].shape == (B, m) and a["probs"].shape == (B, m)
      assert a["topk_idx"].shape == (B, kw.get("top_k", 2))
      assert a["load"].shape == a["gate_mass"].shape == (m,)

  def loss(p):
    o, a = model.apply({"params": p}, X_O, x_n, train=True,
                       rngs={"router": RNGS["router"]})
    return jnp.mean(o ** 2) + sum(jnp.mean(v["probs"] ** 2)
                                  for v in a.values() if v)
  grads = jax.jit(jax.grad(loss))(params)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_param_tree_and_separate_input_moes():
  params = nn.unbox(jax.jit(lambda: _model().init(RNGS, X_O, X_N,
                                                  train=False))())["params"]
  assert set(params) == {"encoder", "input_moe_orig", "input_moe_norm",
                         "output_moe", "head"}
  a, b = (params[f"input_moe_{s}"]["experts"]["wi"] for s in ("orig", "norm"))
  assert a.shape == (4, 32, 32) and not np.allclose(a, b)
  # M_o sees the concatenation of two streams: width 2 * 32.
  assert params["output_moe"]["experts"]["wi"].shape == (4, 64, 64)
  assert params["head"]["kernel"].shape == (64, 5)


def test_encode_and_missing_stream():
  model = _model()
  variables = jax.jit(lambda: model.init(RNGS, X_O, X_N, train=False))()
  assert model.apply(variables, X_O, method="encode").shape == (B, 32)
  with pytest.raises(ValueError):
    model.apply(variables, X_O, None, train=False)


def test_head_init_std_and_the_encoder_gradient_it_allows():
  """MAE's 2e-5 head (for a pre-trained encoder) scales the encoder's gradient by ~2e-5;
  from a random encoder that freezes training, so lecun_normal is the default there."""
  grads, stds = {}, {}
  y = jnp.asarray([[1, 0, 1, 0, 1], [0, 1, 0, 1, 0]], jnp.float32)
  for name, std in (("mae", 2e-5), ("lecun", 0.0)):
    model = _model(streams=("orig",), head_init_std=std)
    params = nn.unbox(model.init(RNGS, X_O, train=False))["params"]
    stds[name] = float(jnp.std(params["head"]["kernel"]))

    def loss(p):
      out, _ = model.apply({"params": p}, X_O, train=False)
      return jnp.mean(optax_bce(out, y))

    g = jax.grad(loss)(params)
    grads[name] = float(jnp.sqrt(sum(jnp.sum(x ** 2) for x in jax.tree.leaves(g["encoder"]))))
  assert stds["mae"] < 3e-5
  assert 0.5 / np.sqrt(32) < stds["lecun"] < 2.0 / np.sqrt(32)  # lecun: 1/sqrt(fan_in=32)
  assert grads["lecun"] > 1e3 * grads["mae"]
  with pytest.raises(ValueError, match="head_init_std"):
    _model(head_init_std=-1.0).init(RNGS, X_O, X_N, train=False)


def optax_bce(logits, labels):
  return -(labels * jax.nn.log_sigmoid(logits) + (1 - labels) * jax.nn.log_sigmoid(-logits))


def test_stage2_head_init_follows_init_from():
  from norface_jax.training import stage2, stage2_config
  c = stage2_config.task_config("synthetic,runlocal", task="au_detection", dataset="bp4d")
  assert stage2.head_init_std(c) == 0.0            # random encoder: lecun_normal
  c.init_from = "/some/mae/checkpoints"
  assert stage2.head_init_std(c) == 2e-5           # pre-trained encoder: MAE's init
  c.model.head_init = "lecun"
  assert stage2.head_init_std(c) == 0.0
  c.model.head_init = "small"
  with pytest.raises(ValueError, match="head_init"):
    stage2.head_init_std(c)
