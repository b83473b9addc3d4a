"""One train step of stage 1 and stage 2 three ways from the same initial state: float32
data parallel (the reference), float32 on an `fsdp=2,tp=2` mesh with the activations
pinned (models/activation_sharding.py), and bfloat16 compute. The sharded step computes
what data parallelism computes; the bfloat16 step's loss agrees with float32's to
bfloat16 precision."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from norface_jax import configlib
from norface_jax.training import loop, sharding, stage1, stage2
from tests.conftest import assert_params_close

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH = 8
RUNS = {"dp": "", "fsdp_tp": "fsdp=2,tp=2", "bf16": "dtype=bfloat16"}


def _config(name, extra):
  if name == "stage2":
    c = configlib.load_config(os.path.join(ROOT, "configs", "bp4d_au.py")
                              + ":synthetic,runlocal" + ("," + extra if extra else ""))
  else:
    c = configlib.load_config(os.path.join(ROOT, "configs", "normalizer.py")
                              + ":synthetic,runlocal,perception_dir=random"
                              + ("," + extra if extra else ""))
    c.model.decoder_channels = (16, 8, 8)
    c.model.disc_channels, c.model.disc_scales = (8, 16), 1
  c.data.image_size = 32
  c.input.batch_size = BATCH
  return c


def _step(name, config, perception=None):
  """(jitted step, initial state, global batch, step rng, step args) of one stage;
  `perception`: stage 1's loss networks (built once per stage, whatever the mesh)."""
  rng = np.random.default_rng(0)
  size = config.data.image_size
  images = lambda: rng.integers(0, 256, (BATCH, size, size, 3), dtype=np.uint8)  # noqa: E731
  if name == "stage2":
    setup = stage2.build(config, 100)
    step = stage2.make_train_step(setup.model, setup.task, config, setup.tx)
    batch = {"image": images(), "image_norm": images(),
             "au": (rng.uniform(size=(BATCH, 12)) > 0.5).astype(np.float32)}
    batch = {k: batch[k] for k in stage2.batch_keys(config, setup.task)}
    args = (None,)
  else:
    setup = stage1.Setup(config)
    step = stage1.make_train_step(setup.gen, setup.disc, perception.functions(), config,
                                  setup.g_tx, setup.d_tx)
    batch = {"image": images()}
    args = (jax.device_put({k: perception.variables[k] for k in stage1.LOSS_NETS},
                           sharding.replicated(setup.mesh)),)
  state = jax.jit(setup.init_fn, out_shardings=setup.state_shardings)(setup.init_rng)
  jitted = loop.jit_train_step(config, setup.mesh, setup.state_shardings, step, len(args))
  return jitted, state, sharding.host_to_global(batch, setup.mesh), setup.step_rng, args


@pytest.fixture(scope="module", params=["stage2", "stage1"])
def runs(request):
  name = request.param
  perception = stage1.load_perception(_config(name, "")) if name == "stage1" else None
  out = {}
  for run, extra in RUNS.items():
    config = _config(name, extra)
    jitted, state, batch, rng, args = _step(name, config, perception)
    lowered = jitted.lower(state, batch, rng, *args)
    hlo = lowered.as_text()
    new_state, metrics = lowered.compile()(state, batch, rng, *args)
    out[run] = dict(config=config, state=new_state, loss=float(metrics["training_loss"]),
                    hlo=hlo, shardings=jax.tree.map(lambda a: a.sharding.spec, new_state))
  return name, out


def test_fsdp_tp_step_equals_data_parallel(runs):
  name, out = runs
  dp, tp = out["dp"], out["fsdp_tp"]
  # The mesh really splits parameters (fsdp over the width, tp over MLPs / heads) and the
  # step pins its activations (with_sharding_constraint ops in the program).
  specs = [tuple(s) for s in jax.tree.leaves(tp["shardings"], is_leaf=lambda x: isinstance(
      x, jax.sharding.PartitionSpec))]
  assert any("fsdp" in s for s in specs) and any("model" in s for s in specs), specs[:8]
  assert tp["hlo"].count("sharding_constraint") > 10
  np.testing.assert_allclose(tp["loss"], dp["loss"], rtol=1e-5)
  params = (lambda s: s.params) if name == "stage2" else (lambda s: (s.g_params, s.d_params))
  assert_params_close(params(dp["state"]), params(tp["state"]), rtol=1e-4, atol=1e-6,
                      key_bias_atol=3 * float(dp["config"].optim.lr))


def test_bf16_step_agrees_with_float32(runs):
  name, out = runs
  f32, bf16 = out["dp"], out["bf16"]
  assert "bf16" in bf16["hlo"] and "bf16" not in f32["hlo"]
  # Parameters (and so the optimizer state) stay float32.
  leaves = jax.tree.leaves(bf16["state"])
  assert {str(a.dtype) for a in leaves if jnp.issubdtype(a.dtype, jnp.floating)} == {"float32"}
  # bfloat16 keeps 8 significant bits: relative error ~2^-8 per op, a few % for a loss.
  np.testing.assert_allclose(bf16["loss"], f32["loss"], rtol=3e-2)
  assert bf16["loss"] != f32["loss"]  # It did compute in bfloat16.


@pytest.mark.parametrize("spec", ["bp4d_au.py", "affectnet_fer.py", "normalizer.py:synthetic",
                                  "mae_pretrain.py"])
def test_full_size_configs_compute_in_bf16_runlocal_in_float32(spec):
  path, _, arg = spec.partition(":")
  load = lambda extra: configlib.load_config(  # noqa: E731
      os.path.join(ROOT, "configs", path) + ":" + ",".join(a for a in (arg, extra) if a))
  assert load("").dtype == "bfloat16"
  assert load("runlocal").dtype == "float32"
  assert load("dtype=float32").dtype == "float32"


def test_constrain_pins_what_the_mesh_divides_and_nothing_outside_a_step():
  from norface_jax.models import activation_sharding as act
  mesh = sharding.make_mesh((("data", -1), ("fsdp", 2), ("model", 2)))
  rules = [("act_batch", ("data", "fsdp")), ("act_heads", "model")]
  f = jax.jit(act.traced_with_rules(lambda x: act.constrain(2 * x, ("act_batch", "act_heads")),
                                    mesh, rules))
  spec = jax.sharding.PartitionSpec
  assert f(jnp.ones((4, 6))).sharding.spec == spec(("data", "fsdp"), "model")
  assert f(jnp.ones((3, 6))).sharding.spec == spec(None, "model")  # 3 rows over 4 shards.
  x = jnp.ones((4, 6))
  assert act.constrain(x, ("act_batch", "act_heads")) is x  # No rules active: untouched.
  with pytest.raises(ValueError, match="2 axis names"), act.rules(mesh, rules):
    act.constrain(jnp.ones((2, 3, 4)), ("act_batch", "act_heads"))
