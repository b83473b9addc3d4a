"""The real stage-1 trainer, tiny, on 8 fake CPU devices (data x model mesh)."""

import os
import signal

import jax
import ml_collections
import numpy as np

from norface_jax import configlib
from norface_jax.training import optim, stage1, writers
from tests.test_train_stage2 import check_model_axis_sharding

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config():
  c = configlib.load_config(os.path.join(ROOT, "configs", "stage1_synthfacs.py")
                            + ":perception_dir=random")
  c.data.image_size = 64
  c.data.frames_per_subject = 2
  c.input.batch_size = 16
  c.input.eval_batch_size = 16
  c.model.decoder_channels = (16, 8, 8)
  c.model.disc_channels = (8, 16)
  c.total_steps = 4
  c.log_every = 2
  c.eval_every = 4
  c.checkpoint_every = 4
  c.eval.max_examples = 16
  c.eval.grid_size = 4
  c.mesh = (("data", 4), ("model", 2))
  c.d_real = "sibling"  # Resume covers the sibling loader too (2 frames per subject).
  return c


def test_stage1_sigterm_resume_is_exact_and_logs_every_loss(tmp_path):
  config = tiny_config()
  full = stage1.train_and_evaluate(config, str(tmp_path / "full"))
  kill = lambda s: os.kill(os.getpid(), signal.SIGTERM) if s == 2 else None  # noqa: E731
  cut = stage1.train_and_evaluate(config, str(tmp_path / "split"), on_step=kill)
  assert cut["stopped"] == "preempted" and int(cut["state"].step) == 2
  resumed = stage1.train_and_evaluate(config, str(tmp_path / "split"))
  assert resumed["start"] == 2
  a = jax.device_get((full["state"].g_params, full["state"].d_params))
  b = jax.device_get((resumed["state"].g_params, resumed["state"].d_params))
  for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))
  logs = writers.read_jsonl(str(tmp_path / "full"))
  keys = set().union(*logs)
  for k in ("training_loss", "loss/adv", "loss/rec", "loss/perc", "loss/id", "loss/lm",
            "loss/exp", "loss/eye", "loss/d_hinge", "images_per_sec",
            "eval/expression/icc_In", "eval/expression/icc_Istar",
            "eval/identity/target_rate_In"):
    assert k in keys, k
  assert all(np.isfinite(v) for row in logs for v in row.values())
  assert os.path.exists(tmp_path / "full" / "stage1_grid.png")
  # The ViT encoder is sharded over the model axis like stage 2's.
  check_model_axis_sharding(full["state"].g_params["encoder"])
  check_torch_export(config, str(tmp_path / "full"), full["state"].g_params,
                     str(tmp_path / "export"))


def adam(b1=None, **optim_config):
  """Stage 1's optimizer (`optim.make_optimizer`: Adam, constant rate after the warm-up)."""
  c = ml_collections.ConfigDict(dict(name="adam", schedule="constant", **optim_config))
  return optim.make_optimizer(c, 100, b1=b1)[0]


def check_torch_export(config, workdir, g_params, out):
  """The workdir's F_nor exports (`stage="nor"`) and its twin loads strictly and matches
  (torch is a dev dependency: a missing torch fails here rather than passing silently)."""
  import safetensors.torch
  import torch
  from norface_jax import torch_twins
  from norface_jax.interop import export

  arch = export.export_workdir(workdir, out)
  print("F_nor export parity:", arch["parity"])
  assert arch["network"] == "nor" and arch["class"] == "NorfaceNormalizer"
  assert arch["inputs"] == ["image_o", "image_t"] and arch["step"] == config.total_steps
  assert arch["parity"]["max_rel_err"] < 1e-5
  twin = torch_twins.from_architecture(arch).eval()
  twin.load_state_dict(safetensors.torch.load_file(os.path.join(out, "model.safetensors")),
                       strict=True)
  # The trained generator on [0, 1] faces, as the trainer runs it.
  size = config.data.image_size
  x_o, x_t = np.random.default_rng(0).uniform(size=(2, 2, size, size, 3)).astype(np.float32)
  gen, _ = stage1.make_models(config)
  ref = gen.apply({"params": jax.device_get(g_params)}, x_o, x_t, train=False)
  with torch.no_grad():
    out_t = twin(*[torch.from_numpy(x.transpose(0, 3, 1, 2).copy()) for x in (x_o, x_t)])
  ref = np.asarray(ref).transpose(0, 3, 1, 2)
  assert np.max(np.abs(out_t.numpy() - ref)) / np.max(np.abs(ref)) < 1e-5


def test_step_pairs_target_sibling_and_oracle():
  """Which images the step pairs: I_t is the batch rolled (b = 2: by one), D's real pair is
  [I_t, I_t's sibling], and with a fixed target and the oracle weight, L_oracle is the
  MSE of F_nor(I_o, target) to `image_norm`. The discriminator stub returns a * b, so its
  mean logit names the pair it saw."""
  import flax.linen as nn
  import jax.numpy as jnp
  import ml_collections
  from norface_jax.models import normalizer

  class PairProbe(nn.Module):
    @nn.compact
    def __call__(self, a, b):
      return [a * b]

  gen = normalizer.Normalizer("mu/8", (8, 8, 8))
  size = 32
  rng = np.random.default_rng(0)
  u8 = lambda: rng.integers(0, 256, (2, size, size, 3), dtype=np.uint8)  # noqa: E731
  batch = {"image": u8(), "sibling": u8(), "image_norm": u8()}
  target = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
  x = lambda a: jnp.asarray(a, jnp.float32) / 255.0  # noqa: E731
  g_params = gen.init(jax.random.key(0), x(batch["image"]), x(batch["image"]), train=False)["params"]
  fns = {k: (lambda p, im: im.mean((1, 2))) for k in stage1.LOSS_NETS}
  fns["vgg"] = lambda p, im: [im]
  config = ml_collections.ConfigDict(dict(
      p_same=0.0, perc_normalize=False, adv_warmup_steps=0, oracle_weight=0.0,
      loss=dict(lambda_rec=1.0, lambda_perc=1.0, lambda_id=1.0, lambda_lm=1.0, lambda_exp=1.0,
                lambda_eye=1.0)))
  tx = adam(lr=1e-4, b1=0.0, b2=0.99, eps=1e-8)
  state = stage1.GanState(jnp.zeros((), jnp.int32), g_params, {}, tx.init(g_params), tx.init({}))
  pv = {k: {} for k in stage1.LOSS_NETS}

  def run(cfg, target_u8=None, keys=("image", "sibling")):
    step = jax.jit(stage1.make_train_step(gen, PairProbe(), fns, cfg, tx, tx, target_u8))
    return jax.device_get(step(state, {k: batch[k] for k in keys}, jax.random.key(1), pv)[1])

  o, s = x(batch["image"]), x(batch["sibling"])
  m = run(config)
  np.testing.assert_allclose(m["d/real_logit"], jnp.mean(jnp.roll(o, 1, 0) * jnp.roll(s, 1, 0)),
                             rtol=1e-5)
  m = run(config, keys=("image",))  # No sibling: the real pair is [I_t, I_t].
  np.testing.assert_allclose(m["d/real_logit"], jnp.mean(jnp.roll(o, 1, 0) ** 2), rtol=1e-5)

  oracle = ml_collections.ConfigDict(config.to_dict())
  oracle.oracle_weight = 3.0
  oracle.adv_weight = 0.0  # As the `oracle` config arg: no L_adv in the total.
  m = run(oracle, target, keys=("image", "sibling", "image_norm"))
  t = jnp.broadcast_to(x(target), o.shape)
  x_n = gen.apply({"params": g_params}, o, t, train=False)
  np.testing.assert_allclose(m["loss/oracle"], jnp.mean((x_n - x(batch["image_norm"])) ** 2),
                             rtol=1e-5)
  np.testing.assert_allclose(m["d/real_logit"], jnp.mean(t ** 2), rtol=1e-5)  # Fixed: [I_t, I_t].
  rest = sum(m[f"loss/{k}"] for k in ("rec", "perc", "id", "lm", "exp", "eye"))
  np.testing.assert_allclose(m["training_loss"], rest + 3.0 * m["loss/oracle"], rtol=1e-5)
  # A zero weight: the term is still measured (on the updated step's I_n) and logged,
  # but it is not part of the loss that is differentiated.
  zero_exp = ml_collections.ConfigDict(oracle.to_dict())
  zero_exp.loss.lambda_exp = 0.0
  m0 = run(zero_exp, target, keys=("image", "sibling", "image_norm"))
  np.testing.assert_allclose(m0["loss/exp"], m["loss/exp"], rtol=1e-5)
  rest = sum(m0[f"loss/{k}"] for k in ("rec", "perc", "id", "lm", "eye"))
  np.testing.assert_allclose(m0["training_loss"], rest + 3.0 * m0["loss/oracle"], rtol=1e-5)


def test_oracle_needs_synthfacs_fixed_target():
  import pytest
  c = tiny_config()
  c.oracle_weight = 1.0
  with pytest.raises(ValueError, match="fixed_target"):
    stage1.oracle_data(c, 2)
  with pytest.raises(ValueError, match="synthfacs:<subject>"):
    stage1.oracle_data(c, None)
  c.fixed_target = True
  data = stage1.oracle_data(c, 2)
  assert (data.normalization, data.target_subject) == ("oracle", 2)
  assert c.data.normalization == "none"  # The config itself is left alone.
  o = configlib.load_config(os.path.join(ROOT, "configs", "normalizer.py") + ":synthetic,runlocal,oracle")
  assert o.fixed_target and o.oracle_weight > 0 and o.adv_weight == 0.0
  assert set(o.loss.values()) == {0.0}
  assert o.p_same == 0.0 and (o.optim.b1, o.optim.warmup_steps) == (0.9, 200)
  with pytest.raises(ValueError, match="needs `synthetic`"):
    configlib.load_config(os.path.join(ROOT, "configs", "normalizer.py") + ":oracle")


def test_stage1_optimizer_warmup_clip_and_beta1_by_hand():
  """Adam on a constant gradient g moves each step by lr_k * g / |g| (bias-corrected
  m/sqrt(v) = sign(g) for any beta1), so the steps are the warm-up ramp lr * k / W.
  Clipping to norm c only rescales g; the sign, hence the step, stays."""
  import jax.numpy as jnp
  tx = adam(lr=0.1, b1=0.9, b2=0.99, eps=0.0, grad_clip=0.5, warmup_steps=4)
  p, g = jnp.zeros(2), jnp.array([3.0, -4.0])  # |g| = 5, clipped to 0.5.
  opt = tx.init(p)
  steps = []
  for _ in range(6):
    u, opt = tx.update(g, opt, p)
    steps.append(np.asarray(u))
  want = [0.1 * min(k, 4) / 4 for k in range(6)]  # 0, .025, .05, .075, .1, .1
  np.testing.assert_allclose(np.stack(steps), np.outer(want, [-1.0, 1.0]), atol=1e-7)
  # beta1 after a sign flip of g (1 then -1; v-hat = 1 either way): b1 = 0 steps the
  # full lr along the new gradient; b1 = 0.9 has m_2 = 0.9 * 0.1 - 0.1 = -0.01, bias-
  # corrected -0.01 / (1 - 0.81) = -1/19, so only a 19th of it.
  for b1, want_u in ((0.0, 1.0), (0.9, 1.0 / 19.0)):
    tx = adam(lr=1.0, b2=0.99, eps=0.0, b1=b1)  # The override, as D's `d_b1`.
    opt = tx.init(jnp.zeros(1))
    _, opt = tx.update(jnp.ones(1), opt)
    u, _ = tx.update(-jnp.ones(1), opt)
    np.testing.assert_allclose(float(u[0]), want_u, rtol=1e-5, err_msg=f"b1={b1}")


def test_consistency_teachers_at_the_extremes():
  """evaluate_consistency's L_exp/L_eye rows: an F_nor that returns I_o costs 0 on both
  teachers; one that returns the bare target costs what the target costs (`_It`), and
  its pixel error to the true I_n is the target's."""
  import jax.numpy as jnp
  from norface_jax.data import images as images_lib
  from norface_jax.data import registry
  from norface_jax.evaluation import consistency
  from norface_jax.training import sharding

  c = tiny_config()
  perception = stage1.load_perception(c)
  target_u8, subject = images_lib.load_target(c.target, c.data)
  source = registry.make_source(stage1.eval_data(c, subject), "test", task="au_intensity")
  bs = sharding.batch_sharding(sharding.make_mesh((("data", -1),)))
  run = lambda fn: consistency.evaluate_consistency(  # noqa: E731
      fn, source, perception, subject, bs, 16, 32, target_u8)
  copy = run(lambda x: x)
  assert abs(copy["teacher/exp_In"]) < 1e-9 and abs(copy["teacher/eye_In"]) < 1e-9
  assert copy["teacher/exp_It"] > 0.0 and copy["teacher/eye_Istar"] > 0.0
  bare = run(lambda x: jnp.broadcast_to(jnp.asarray(target_u8), x.shape))
  for k in ("exp", "eye"):
    np.testing.assert_allclose(bare[f"teacher/{k}_In"], bare[f"teacher/{k}_It"], rtol=1e-5)
  np.testing.assert_allclose(bare["pixels/mse_In_to_Istar"], bare["pixels/mse_It_to_Istar"],
                             rtol=1e-5)
  assert bare["n"] == min(32, len(source))


def test_consistency_eval_compiles_once_per_run():
  """A run builds one ConsistencyEval: the generator's parameters are an argument, so a
  second evaluation with new parameters traces nothing again, and still sees them."""
  import jax.numpy as jnp
  from norface_jax.data import images as images_lib
  from norface_jax.data import registry
  from norface_jax.evaluation import consistency
  from norface_jax.training import sharding

  c = tiny_config()
  target_u8, subject = images_lib.load_target(c.target, c.data)
  source = registry.make_source(stage1.eval_data(c, subject), "test", task="au_intensity")
  traces = []

  def normalize(gain, x):  # gain 1: I_n = I_o; gain 0: a black face.
    traces.append(1)
    return (x.astype(jnp.float32) * gain).astype(jnp.uint8)

  ev = consistency.ConsistencyEval(normalize, stage1.load_perception(c),
                                   sharding.batch_sharding(sharding.make_mesh((("data", -1),))))
  copy = ev(jnp.float32(1.0), source, subject, 16, 16, target_u8)
  black = ev(jnp.float32(0.0), source, subject, 16, 16, target_u8)
  assert len(traces) == 1
  assert abs(copy["teacher/exp_In"]) < 1e-9 and black["teacher/exp_In"] > 0.0


def test_loss_landscape_by_hand():
  """stage1_landscape scores known candidates with the step's own terms: I_o costs 0
  on the expression side, the bare target 0 on the identity side, and each total is
  the config-weighted sum of its terms."""
  from norface_jax.training import stage1_landscape

  c = tiny_config()
  r = stage1_landscape.landscape(c, stage1.load_perception(c), max_examples=20, batch_size=16)
  assert r["n"] == 28.0  # Whole batches: both of the tiny test split's 28 faces.
  assert abs(r["original/exp"]) < 1e-7 and abs(r["original/eye"]) < 1e-7
  for k in ("perc", "id", "lm"):
    assert abs(r[f"target/{k}"]) < 1e-6, k
  w = {k: c.loss[f"lambda_{k}"] for k in stage1_landscape.TERMS}
  for cand in stage1_landscape.CANDIDATES:
    np.testing.assert_allclose(r[f"{cand}/weighted"],
                               sum(w[k] * r[f"{cand}/{k}"] for k in w), rtol=1e-5)
  np.testing.assert_allclose(r["margin/answer_vs_target"],
                             r["target/weighted"] - r["true_In/weighted"], rtol=1e-6)


def test_expression_output_embedding_or_head():
  """`functions(expression_output=...)`: the expression network's embedding (its
  backbone) or the AU intensities of its training head; a net without a head refuses."""
  import jax.numpy as jnp
  import pytest
  from norface_jax.models import perception as perception_lib

  c = tiny_config()
  nets = stage1.load_perception(c)
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 64, 64, 3)), jnp.float32)
  v = nets.variables["expression"]
  emb, head = nets.modules["expression"].apply(v, x, False)
  np.testing.assert_allclose(nets.functions()["expression"](v, x), emb, rtol=1e-6)
  np.testing.assert_allclose(nets.functions("head")["expression"](v, x), head, rtol=1e-6)
  bare = perception_lib.PerceptionNets({"expression": nets.modules["expression"].backbone},
                                       {}, {})
  with pytest.raises(ValueError, match="no training head"):
    bare.functions("head")["expression"]({k: val["backbone"] for k, val in v.items()}, x)
  with pytest.raises(ValueError, match="expected 'embedding' or 'head'"):
    nets.functions("logits")
