"""Stage 1 trainer: F_nor (E_s + EMM + D_f) against D_res with Norface's seven losses.

Read top to bottom like `stage2`: mesh, data, generator/discriminator and the
sharded abstract state; restore if a checkpoint exists; a jitted, donated
`train_step(state, batch, rng, perception_vars)` that updates D and G; logging,
image grids (original | target | normalized), consistency metrics, checkpoints.

Pairs: the loader yields shuffled faces I_o; inside the step I_t is the batch rolled
by a random non-zero shift (so I_t is as random as I_o), and with probability
`p_same` a pair gets I_t = I_o so that L_rec (eq. 5) applies. D_res sees the fake
pair [I_t, I_n] and, as the real pair, [I_t, another face of I_t's subject] with
`d_real="sibling"` (`registry.SiblingSource`) or [I_t, I_t] with `d_real="target"`. The randomness is `fold_in(rng, step)`,
so a resumed run is identical.
"""

from __future__ import annotations

import copy
import functools
import os
import time
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from norface_jax.data import pipeline
from norface_jax.data import registry
from norface_jax.evaluation import metrics as metrics_lib
from norface_jax.evaluation import plots
from norface_jax.losses import adversarial
from norface_jax.losses import normalization as nor_losses
from norface_jax.models import discriminator as disc_lib
from norface_jax.models import normalizer as normalizer_lib
from norface_jax.training import checkpointing, optim, perception_train, sharding, stage2, writers
from norface_jax.training import normalize as normalize_lib

LOSS_NETS = ("vgg", "identity", "landmarks", "expression", "eyebrow")


@flax.struct.dataclass
class GanState:
  step: jax.Array
  g_params: Any
  d_params: Any
  g_opt: Any
  d_opt: Any


def make_models(config) -> tuple[nn.Module, nn.Module]:
  m, dtype = config.model, jnp.dtype(config.dtype)
  gen = normalizer_lib.Normalizer(m.encoder, tuple(m.decoder_channels), m.emm_depth, dtype, m.remat)
  disc = disc_lib.MultiScaleDiscriminator(tuple(m.disc_channels), m.disc_scales, dtype)
  return gen, disc


def d_lr_b1(optim_config) -> tuple[float, float]:
  """D's learning rate and Adam beta1: `d_lr` (0 = G's `lr`) and `d_b1` (< 0 = G's `b1`)."""
  c = optim_config
  d_b1 = float(c.get("d_b1", -1.0))
  return float(c.get("d_lr", 0.0) or c.lr), d_b1 if d_b1 >= 0 else float(c.b1)


def make_tx(optim_config, lr: float | None = None,
            b1: float | None = None) -> optax.GradientTransformation:
  """Adam (beta1 = 0, beta2 = 0.99 in the paper; `b1` overrides), global-norm clipping
  with `grad_clip` > 0, and a constant learning rate (`lr` overrides) after a linear
  warm-up from 0 over `warmup_steps`."""
  c = optim_config
  rate = c.lr if lr is None else lr
  warmup = int(c.get("warmup_steps", 0))
  if warmup:
    rate = optax.linear_schedule(0.0, rate, warmup)
  parts = [optax.clip_by_global_norm(c.grad_clip)] if c.get("grad_clip", 0.0) else []
  parts += [optax.scale_by_adam(b1=c.b1 if b1 is None else b1, b2=c.b2, eps=c.eps),
            optax.scale_by_learning_rate(rate)]
  return optax.chain(*parts)


def ensure_perception(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
  """With an empty `perception_dir` and a `config.perception` (SynthFACS configs), trains
  the perception networks into `<workdir>/perception` (resuming or reusing what is
  there) and returns a copy of the config pointing at them."""
  if config.perception_dir or not config.get("perception"):
    return config
  path = os.path.join(workdir, "perception")
  if not perception_train.is_trained(path, int(config.perception.total_steps)):
    logging.info("Stage 1: no perception_dir; training the SynthFACS perception networks "
                 "into %s first (%d steps).", path, config.perception.total_steps)
    perception_train.train_and_evaluate(config.perception, path)
  config = copy.deepcopy(config)
  config.perception_dir = path
  return config


def load_perception(config) -> Any:
  if not config.perception_dir:
    raise ValueError("config.perception_dir is empty: train the perception networks first "
                     "(configs/perception_synthfacs.py), use a `synthetic` config (which "
                     "trains them under the workdir), or set it to 'random' for a smoke test")
  if config.perception_dir == "random":
    logging.warning("perception_dir='random': the loss networks are untrained (smoke test).")
    nets = ml_collections.ConfigDict(dict(
        layers=(1, 1, 1, 1), widths=(8, 8, 16, 16), id_dim=16, exp_dim=8,
        vgg_cfg=(8, "M", 16, 16), eval_cfg=(8, "M", 16)))
    return perception_train.random_perception(nets, config.data.image_size)
  return perception_train.load(config.perception_dir)


def loss_terms(fns, pv, x_o, x_t, same, perc_normalize: bool,
               exp_output: str = "embedding") -> dict[str, Any]:
  """name -> L(I_n) for eq. 5-10 (L_adv needs D and is added by the step).

  What the frozen networks say about I_o and I_t is computed once here, outside any
  gradient; `same` (B,) marks the pairs drawn with I_t = I_o (L_rec's pairs).
  `exp_output`: what `fns["expression"]` returns (`PerceptionNets.functions`): an
  "embedding" is compared on the unit sphere, AU intensities ("head") as they are.
  """
  exp_normalize = exp_output == "embedding"
  t_vgg, t_id = fns["vgg"](pv["vgg"], x_t), fns["identity"](pv["identity"], x_t)
  t_lm = fns["landmarks"](pv["landmarks"], x_t)
  o_exp, o_eye = fns["expression"](pv["expression"], x_o), fns["eyebrow"](pv["eyebrow"], x_o)
  return {
      "rec": lambda x_n: nor_losses.reconstruction_loss(x_n, x_t, same),
      "perc": lambda x_n: nor_losses.perceptual_loss(t_vgg, fns["vgg"](pv["vgg"], x_n),
                                                     perc_normalize),
      "id": lambda x_n: nor_losses.identity_loss(t_id, fns["identity"](pv["identity"], x_n)),
      "lm": lambda x_n: nor_losses.landmark_loss(t_lm, fns["landmarks"](pv["landmarks"], x_n)),
      "exp": lambda x_n: nor_losses.expression_loss(
          o_exp, fns["expression"](pv["expression"], x_n), exp_normalize),
      "eye": lambda x_n: nor_losses.eyebrow_loss(o_eye, fns["eyebrow"](pv["eyebrow"], x_n)),
  }


def make_train_step(gen, disc, fns, config, g_tx, d_tx, target_u8: np.ndarray | None = None):
  """The pure step: one discriminator and one generator update from the same state.

  `target_u8` (with `config.fixed_target`) makes every pair's I_t that one face, the
  inference condition, instead of a random other face of the batch. With
  `config.oracle_weight` > 0 (SynthFACS only) the batch carries `image_norm`, the true
  I_n rendered by SynthFACS, and `oracle_weight * mean (I_n - true I_n)^2` is added:
  a diagnostic that supervises F_nor directly, to tell the architecture's limits
  (can it carry I_o's expression at all?) from the losses' (do they ask it to?).
  """
  p_same = float(config.p_same)
  weights = dict(config.loss)
  perc_normalize = bool(config.get("perc_normalize", False))
  exp_output = config.get("exp_output", "embedding")
  adv_warmup = int(config.get("adv_warmup_steps", 0))
  oracle_weight = float(config.get("oracle_weight", 0.0))
  adv_weight = float(config.get("adv_weight", 1.0))
  fixed = target_u8 is not None

  def train_step(state: GanState, batch, rng, pv):
    rng = jax.random.fold_in(rng, state.step)
    r_shift, r_same, r_drop = jax.random.split(rng, 3)
    x_o = batch["image"].astype(jnp.float32) / 255.0
    b = x_o.shape[0]
    shift = jax.random.randint(r_shift, (), 1, max(b, 2))
    if fixed:  # Diagnostic: the inference condition, one target face for every pair.
      x_t = jnp.broadcast_to(jnp.asarray(target_u8, jnp.float32) / 255.0, x_o.shape)
    else:
      x_t = jnp.roll(x_o, shift, axis=0)
    same = jax.random.bernoulli(r_same, p_same, (b,))
    pick = lambda a, b_: jnp.where(same[:, None, None, None], a, b_)
    x_t = pick(x_o, x_t)
    # D_res's real pair: [I_t, another face of I_t's subject] (`sibling`), else [I_t, I_t].
    if "sibling" in batch and not fixed:
      sib = batch["sibling"].astype(jnp.float32) / 255.0
      x_real = pick(sib, jnp.roll(sib, shift, axis=0))
    else:
      x_real = x_t
    terms = {"adv": lambda x_n: adversarial.hinge_g_loss(
        disc.apply({"params": state.d_params}, x_t, x_n)),
             **loss_terms(fns, pv, x_o, x_t, same, perc_normalize, exp_output)}
    # Terms with weight 0 (the oracle diagnostic, ablations) are measured on I_n after
    # the update's gradient, forward only: logged like the others, never back-propagated.
    # (A missing weight counts as trained, so `weighted_total` names it.)
    trained = [k for k in terms
               if (adv_weight if k == "adv" else weights.get(nor_losses.WEIGHTS[k], 1.0))]

    def g_loss_fn(g_params):
      x_n = gen.apply({"params": g_params}, x_o, x_t, train=True, rngs={"dropout": r_drop})
      comps = {k: terms[k](x_n) for k in trained}
      total = nor_losses.weighted_total(comps, weights)
      if oracle_weight:  # Diagnostic: L2 to SynthFACS's true I_n (I_o itself when same).
        x_star = jnp.where(same[:, None, None, None], x_o,
                           batch["image_norm"].astype(jnp.float32) / 255.0)
        comps["oracle"] = jnp.mean(jnp.square(x_n - x_star))
        total = total + oracle_weight * comps["oracle"]
      if "adv" in comps and (adv_warmup or adv_weight != 1.0):  # adv_weight, ramped 0 -> it.
        ramp = (jnp.minimum(state.step.astype(jnp.float32) / adv_warmup, 1.0) if adv_warmup
                else 1.0)
        total = total + (adv_weight * ramp - 1.0) * comps["adv"]
      return total, (comps, x_n)

    (g_total, (comps, x_n)), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(state.g_params)
    x_n = jax.lax.stop_gradient(x_n)
    comps.update({k: terms[k](x_n) for k in terms if k not in trained})

    def d_loss_fn(d_params):
      real = disc.apply({"params": d_params}, x_t, x_real)
      fake = disc.apply({"params": d_params}, x_t, x_n)
      mean = lambda ls: sum(jnp.mean(l) for l in ls) / len(ls)
      return adversarial.hinge_d_loss(real, fake), (mean(real), mean(fake))

    (d_loss, (d_real, d_fake)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(state.d_params)
    g_upd, g_opt = g_tx.update(g_grads, state.g_opt, state.g_params)
    d_upd, d_opt = d_tx.update(d_grads, state.d_opt, state.d_params)
    new_state = state.replace(step=state.step + 1, g_params=optax.apply_updates(state.g_params, g_upd),
                              d_params=optax.apply_updates(state.d_params, d_upd), g_opt=g_opt,
                              d_opt=d_opt)
    metrics = {"training_loss": g_total, "loss/d_hinge": d_loss, "d/real_logit": d_real,
               "d/fake_logit": d_fake, "same_fraction": jnp.mean(same.astype(jnp.float32)),
               **{f"loss/{k}": v for k, v in comps.items()},
               "l2_grads_g": optax.tree.norm(g_grads), "l2_grads_d": optax.tree.norm(d_grads),
               "l2_params_g": optax.tree.norm(state.g_params)}
    return new_state, metrics

  return train_step


class Setup:
  """Models, mesh, optimizers and the abstract sharded state (nothing allocated)."""

  def __init__(self, config):
    self.gen, self.disc = make_models(config)
    self.mesh = sharding.make_mesh(config.mesh)
    self.rules = stage2.mesh_rules(config, self.mesh)
    # TTUR: `optim.d_lr` (0 = same as G) sets the discriminator's learning rate, and
    # `optim.d_b1` (< 0 = same as G) its Adam beta1.
    self.g_tx = make_tx(config.optim)
    self.d_tx = make_tx(config.optim, *d_lr_b1(config.optim))
    self.init_rng, self.step_rng = jax.random.split(jax.random.key(config.seed))
    size = config.data.image_size

    def init_fn(rng):
      rg, rd = jax.random.split(rng)
      x = jnp.zeros((1, size, size, 3), jnp.float32)
      gp = self.gen.init({"params": rg, "dropout": rg}, x, x, train=False)["params"]
      dp = self.disc.init(rd, x, x)["params"]
      return GanState(jnp.zeros((), jnp.int32), gp, dp, self.g_tx.init(gp), self.d_tx.init(dp))

    self.init_fn = init_fn
    self.abstract_state, self.state_shardings = sharding.logical_state_shardings(
        init_fn, self.mesh, self.rules, self.init_rng)

  def restore_target(self):
    return sharding.restore_target(self.abstract_state, self.state_shardings)


def load_generator(workdir: str) -> tuple[ml_collections.ConfigDict, nn.Module, Any, int]:
  """(config, generator, params, step) of a stage-1 workdir's latest checkpoint."""
  config = stage2.load_config(workdir)
  setup = Setup(config)
  state, step = checkpointing.restore_state_only(os.path.join(workdir, "checkpoints"),
                                                 setup.restore_target())
  return config, setup.gen, state.g_params, step


def image_rows(normalize_fn, images_u8: np.ndarray, target_u8: np.ndarray) -> np.ndarray:
  """The (original | target | normalized) grid of a batch (`normalize_fn`: uint8 -> uint8,
  jitted by the caller)."""
  n = len(images_u8)
  out = np.asarray(jax.device_get(normalize_fn(jnp.asarray(images_u8))))
  return plots.image_grid([images_u8, np.repeat(target_u8[None], n, 0), out],
                          ["original", "target", "normalized"])


class ConsistencyEval:
  """Expression and identity consistency of I_n, measured by the independent networks.

  Built once per run: `normalize_fn(params, images_u8) -> images_u8` takes the generator
  parameters as an argument, so every evaluation of a run reuses one compiled program
  per function (the perception networks are bound once).

  Expression: the evaluation AU regressor on I_n against the ground-truth AU
  intensities of I_o (ICC(3,1), MAE), beside the same regressor on I_o itself and,
  when the source carries `image_norm` (SynthFACS's true I_n: `eval_data`), on that
  (`_Istar`, the ceiling for I_n), with the pixel MSE of I_n to it beside that of the
  plain target face (`target_u8`; what "no expression at all" costs). Identity: the
  share of I_n the evaluation identity classifier assigns to the target subject, beside
  the share of I_o (the floor).

  The teachers: L_exp and L_eye (eq. 9-10, the stage-1 loss networks) of I_n against
  I_o, and with the true I_n also of it (`_Istar`: what an exact transfer costs) and of
  the bare target (`_It`: what no transfer costs). An I_n that scores below the true
  I_n on a teacher while the independent regressor reads no expression in it has
  fooled that teacher rather than learned the expression.
  """

  def __init__(self, normalize_fn, perception, mesh, exp_output: str = "embedding"):
    self.perception = perception
    self.enabled = "eval_au" in perception.modules
    if not self.enabled:
      return
    m, v = perception.modules, perception.variables
    self.bs = sharding.batch_sharding(mesh)
    self.norm = jax.jit(normalize_fn, out_shardings=self.bs)
    self.au_fn = jax.jit(
        lambda x: m["eval_au"].apply(v["eval_au"], x.astype(jnp.float32) / 255.0) * 5.0)
    self.id_fn = jax.jit(lambda x: jnp.argmax(
        m["eval_id"].apply(v["eval_id"], x.astype(jnp.float32) / 255.0), -1))
    fns = perception.functions(exp_output)
    exp_loss = functools.partial(nor_losses.expression_loss, normalize=exp_output == "embedding")
    self.teach_fn = jax.jit(lambda x_o, x: {  # per-sample L_exp, L_eye of x against x_o (uint8)
        name: jax.vmap(lambda a, b: loss(a[None], b[None]))(
            fns[net](v[net], x_o.astype(jnp.float32) / 255.0),
            fns[net](v[net], x.astype(jnp.float32) / 255.0))
        for name, net, loss in (("exp", "expression", exp_loss),
                                ("eye", "eyebrow", nor_losses.eyebrow_loss))})

  def __call__(self, params, source, target_subject: int | None, batch_size: int,
               max_examples: int = 0, target_u8: np.ndarray | None = None) -> dict[str, float]:
    if not self.enabled:
      return {}
    meta = self.perception.meta
    au_fn, id_fn, teach_fn = self.au_fn, self.id_fn, self.teach_fn
    star = "image_norm" in source[0]
    tags = ("n",) + (("star", "t") if star else ())
    rows = {k: [] for k in ("au_n", "au_o", "gt", "id_n", "id_o")
            + tuple(f"{loss}_{tag}" for loss in ("exp", "eye") for tag in tags)
            + (("au_star", "mse_n", "mse_t") if star else ())}
    keys = ("image", "au_intensity") + (("image_norm",) if star else ())
    seen = 0
    for batch in pipeline.eval_batches(source, batch_size=batch_size, keys=keys):
      valid = batch.pop("_valid").astype(bool)
      x_o = batch["image"]
      x_n = self.norm(params, jax.device_put(x_o, self.bs))
      for key, val in (("au_n", au_fn(x_n)), ("au_o", au_fn(x_o)), ("id_n", id_fn(x_n)),
                       ("id_o", id_fn(x_o))):
        rows[key].append(np.asarray(jax.device_get(val))[valid])
      rows["gt"].append(batch["au_intensity"][valid])
      others = {"n": x_n}
      if star:
        others["star"] = batch["image_norm"]
        if target_u8 is not None:
          others["t"] = np.broadcast_to(target_u8, x_o.shape)
      for tag, x in others.items():
        for loss, val in jax.device_get(teach_fn(x_o, x)).items():
          rows[f"{loss}_{tag}"].append(np.asarray(val)[valid])
      if star:
        rows["au_star"].append(np.asarray(jax.device_get(au_fn(batch["image_norm"])))[valid])
        x_star = batch["image_norm"][valid].astype(np.float32) / 255.0
        x_n_host = np.asarray(jax.device_get(x_n))[valid].astype(np.float32) / 255.0
        rows["mse_n"].append(np.mean(np.square(x_n_host - x_star), axis=(1, 2, 3)))
        if target_u8 is not None:
          rows["mse_t"].append(np.mean(np.square(target_u8 / 255.0 - x_star), axis=(1, 2, 3)))
      seen += int(valid.sum())
      if max_examples and seen >= max_examples:
        break
    r = {k: np.concatenate(val) if val else np.zeros(0) for k, val in rows.items()}
    names = meta["au_names"]
    out = {"n": float(len(r["gt"]))}
    for tag in ("n", "o") + (("star",) if star else ()):
      rep = metrics_lib.intensity_report(r[f"au_{tag}"], r["gt"], names)
      out[f"expression/icc_I{tag}"] = float(rep["icc/mean"])
      out[f"expression/mae_I{tag}"] = float(rep["mae/mean"])
    for key, val in r.items():  # The teachers (L_exp, L_eye) on I_n, true I_n, target.
      if key.startswith(("exp_", "eye_")) and len(val):
        loss, tag = key.split("_")
        out[f"teacher/{loss}_I{tag}"] = float(np.mean(val))
    if star:  # Pixel MSE to the true I_n: of I_n, and of the target itself (no expression).
      out["pixels/mse_In_to_Istar"] = float(np.mean(r["mse_n"]))
      if len(r["mse_t"]):
        out["pixels/mse_It_to_Istar"] = float(np.mean(r["mse_t"]))
    if target_subject is not None and target_subject in meta["subjects"]:
      cls = meta["subjects"].index(target_subject)
      out["identity/target_rate_In"] = float(np.mean(r["id_n"] == cls))
      out["identity/target_rate_Io"] = float(np.mean(r["id_o"] == cls))
    return out


def evaluate_consistency(normalize_fn, source, perception, target_subject: int | None,
                         mesh, batch_size: int, max_examples: int = 0,
                         target_u8: np.ndarray | None = None,
                         exp_output: str = "embedding") -> dict[str, float]:
  """One `ConsistencyEval` of `normalize_fn(images_u8) -> images_u8` (parameters bound):
  for a single measurement (`stage1_report`); a training run builds the evaluator once."""
  ev = ConsistencyEval(lambda _, x: normalize_fn(x), perception, mesh, exp_output)
  return ev(None, source, target_subject, batch_size, max_examples, target_u8)


def oracle_data(config, target_subject: int | None) -> ml_collections.ConfigDict:
  """The data config of the training source: with `oracle_weight` it also renders
  `image_norm` (SynthFACS's true I_n on the fixed target), so it checks the options."""
  if not config.get("oracle_weight", 0.0):
    return config.data
  if not config.data.synthetic or target_subject is None:
    raise ValueError("config.oracle_weight > 0 needs SynthFACS (`synthetic`) and a "
                     f"`synthfacs:<subject>` target; got target={config.target!r}")
  if not config.get("fixed_target", False):
    raise ValueError("config.oracle_weight > 0 needs config.fixed_target=True: the true "
                     "I_n exists only for the one target face")
  return _with_true_in(config.data, target_subject)


def _with_true_in(data_config, target_subject: int) -> ml_collections.ConfigDict:
  """A copy of the data config whose SynthFACS source also renders `image_norm`."""
  data = copy.deepcopy(data_config)
  data.normalization, data.target_subject = "oracle", int(target_subject)
  return data


def eval_data(config, target_subject: int | None) -> ml_collections.ConfigDict:
  """The test source's data config: on SynthFACS with a `synthfacs:` target it also
  renders the true I_n (`image_norm`), so the evaluation measures the regressor's
  ceiling on the target's face."""
  if not config.data.synthetic or target_subject is None:
    return config.data
  return _with_true_in(config.data, target_subject)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       stop_at: int | None = None) -> dict[str, Any]:
  """Trains F_nor per `config` into `workdir`; `stop_at` ends early (as a preemption)."""
  workdir = os.path.abspath(os.path.expanduser(workdir))
  os.makedirs(workdir, exist_ok=True)
  sharding.check_batch_size(config.input.batch_size, sharding.make_mesh(config.mesh))
  config = ensure_perception(config, workdir)
  perception = load_perception(config)
  target_u8, target_subject = normalize_lib.load_target(config.target, config.data)
  train_source = registry.make_source(oracle_data(config, target_subject), "train",
                                      task="au_intensity")
  keys = ("image",) + (("image_norm",) if config.get("oracle_weight", 0.0) else ())
  if config.get("d_real", "target") == "sibling" and not config.get("fixed_target", False):
    ids = registry.subject_ids(train_source)
    if ids is None:
      logging.warning("d_real='sibling' but %r has no subject ids: D_res's real pair is "
                      "[I_t, I_t].", train_source)
    else:
      train_source = registry.SiblingSource(train_source, ids, config.seed)
      keys += ("sibling",)
      logging.info("D_res real pairs: [I_t, another face of its subject] (%s).", train_source)
  eval_source = registry.make_source(eval_data(config, target_subject), "test", task="au_intensity")
  setup = Setup(config)
  mesh, steps = setup.mesh, int(config.total_steps)
  sharding.check_batch_size(config.input.batch_size, mesh)  # Fails before compiling.
  stage2.save_config(config, workdir)
  logging.info("Stage 1: %d train faces, %d steps of batch %d on mesh %s.", len(train_source),
               steps, config.input.batch_size, dict(mesh.shape))
  repl = sharding.replicated(mesh)
  pv = jax.device_put({k: perception.variables[k] for k in LOSS_NETS}, repl)
  fns = perception.functions(config.get("exp_output", "embedding"))

  writer = writers.MetricWriter(workdir)
  writer.write_hparams(config.to_dict())
  loader = pipeline.train_loader(train_source, batch_size=config.input.batch_size, seed=config.seed,
                                 keys=keys, worker_count=config.input.workers,
                                 prefetch=config.input.prefetch)
  data_iter = iter(loader)
  ckpt = checkpointing.Checkpointer(workdir, keep=config.keep_checkpoints)
  if ckpt.latest_step() is not None:
    state, start = ckpt.restore(setup.restore_target(), data_iter)
  else:
    state = jax.jit(lambda r: nn.unbox(setup.init_fn(r)), out_shardings=setup.state_shardings)(
        setup.init_rng)
    if config.init_from:
      shim = stage2.load_pretrained(optim.TrainState(state.step, state.g_params, None),
                                    config.init_from, config.init_from_key)
      state = state.replace(g_params=shim.params)
    start = 0

  bsh = sharding.batch_sharding(mesh)
  train_step = jax.jit(make_train_step(setup.gen, setup.disc, fns, config, setup.g_tx, setup.d_tx,
                                       target_u8 if config.get("fixed_target", False) else None),
                       in_shardings=(setup.state_shardings, bsh, repl, repl),
                       out_shardings=(setup.state_shardings, repl), donate_argnums=(0,))
  # The evaluation's programs take the generator's parameters as an argument: compiled
  # once per run, not at every evaluation.
  normalize_params = lambda p, x: normalize_lib.normalize_apply(  # noqa: E731
      setup.gen, p, jnp.asarray(target_u8, jnp.uint8), x)
  grid_fn = jax.jit(normalize_params)
  consistency = ConsistencyEval(normalize_params, perception, mesh,
                                config.get("exp_output", "embedding"))
  grid_items = [eval_source[i]["image"] for i in range(min(config.eval.grid_size, len(eval_source)))]
  grid_images = np.stack(grid_items)
  progress = writers.ProgressReport(num_train_steps=steps, batch_size=config.input.batch_size,
                                    writer=writer, every_steps=config.log_every)
  pending, last = [], {}
  for step in range(start + 1, steps + 1):
    state, metrics = train_step(state, sharding.host_to_global(next(data_iter), mesh),
                                setup.step_rng, pv)
    pending.append(metrics)
    if step % config.log_every == 0 or step == steps:
      host = jax.device_get(pending)
      pending = []
      mean = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
      if not np.isfinite(host[-1]["training_loss"]) and config.nan_policy == "stop":
        raise FloatingPointError(f"non-finite stage-1 loss at step {step}: {host[-1]}")
      writer.write_scalars(step, mean)
      progress(step)
    if step % config.eval_every == 0 or step == steps:
      t0 = time.perf_counter()
      grid = image_rows(functools.partial(grid_fn, state.g_params), grid_images, target_u8)
      writer.write_images(step, {"original|target|normalized": grid})
      if jax.process_index() == 0:
        from PIL import Image
        Image.fromarray(grid).save(os.path.join(workdir, "stage1_grid.png"))
      last = consistency(state.g_params, eval_source, target_subject,
                         config.input.eval_batch_size, config.eval.max_examples, target_u8)
      writer.write_scalars(step, {f"eval/{k}": v for k, v in last.items()})
      progress.exclude(time.perf_counter() - t0)
    if step % config.checkpoint_every == 0 or step == steps or step == stop_at:
      t0 = time.perf_counter()
      ckpt.save(step, state, data_iter, force=True)
      progress.exclude(time.perf_counter() - t0)
    if step == stop_at:
      logging.info("Stopping at step %d as asked (stop_at).", step)
      break
  ckpt.close()
  writer.close()
  return {"state": state, "report": last, "steps": steps, "generator": setup.gen,
          "target": target_u8}
