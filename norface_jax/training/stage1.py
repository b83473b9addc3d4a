"""Stage 1: F_nor (E_s + EMM + D_f) against D_res with Norface's seven losses.

What is stage 1's own: the generator and discriminator, the frozen perception networks
behind the losses, the pure `train_step(state, batch, rng, perception_vars)` that updates
D and G, the eval hook (image grid original | target | normalized, and
`evaluation.consistency`), and `Setup` (mesh, optimizers, sharded abstract state).
`train_and_evaluate` hands them to the one loop (`training/loop.py`).

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
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from norface_jax.data import images as images_lib
from norface_jax.data import loader as data_loader
from norface_jax.data import registry
from norface_jax.evaluation import consistency
from norface_jax.evaluation import plots
from norface_jax.losses import adversarial
from norface_jax.losses import normalization as nor_losses
from norface_jax.models import discriminator as disc_lib
from norface_jax.models import normalizer as normalizer_lib
from norface_jax.training import checkpointing, loop, optim, perception_nets, perception_train
from norface_jax.training import sharding
from norface_jax.training import workdir as workdir_lib

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
  gen = normalizer_lib.Normalizer(m.encoder, tuple(m.decoder_channels), m.emm_depth, dtype, m.remat,
                                  m.get("attention", "auto"), m.get("remat_policy", ""))
  disc = disc_lib.MultiScaleDiscriminator(tuple(m.disc_channels), m.disc_scales, dtype)
  return gen, disc


def d_lr_b1(optim_config) -> tuple[float, float]:
  """D's learning rate and Adam beta1: `d_lr` (0 = G's `lr`) and `d_b1` (< 0 = G's `b1`)."""
  c = optim_config
  d_b1 = float(c.get("d_b1", -1.0))
  return float(c.get("d_lr", 0.0) or c.lr), d_b1 if d_b1 >= 0 else float(c.b1)


def make_txs(config) -> tuple[Any, Any]:
  """(G's, D's) optimizers from `config.optim` (`optim.make_optimizer`: Adam with the
  paper's beta1 = 0, beta2 = 0.99 and a constant rate after an optional linear warm-up);
  D takes `d_lr` and `d_b1` where set (TTUR)."""
  steps = int(config.total_steps)
  g_tx, _ = optim.make_optimizer(config.optim, steps)
  d_lr, d_b1 = d_lr_b1(config.optim)
  d_tx, _ = optim.make_optimizer(config.optim, steps, lr=d_lr, b1=d_b1)
  return g_tx, d_tx


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
    return perception_nets.random_perception(nets, config.data.image_size)
  return perception_nets.load(config.perception_dir)


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
    self.rules = sharding.mesh_rules(config.logical_axis_rules, self.mesh)
    self.g_tx, self.d_tx = make_txs(config)
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
  config = workdir_lib.load_config(workdir)
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


def make_eval_hook(config, setup: Setup, perception, eval_source, target_u8, target_subject,
                   workdir: str):
  """`evaluate(state, step, writer)` for the loop: the image grid and the consistency
  metrics. The programs take the generator's parameters as an argument, so they compile
  once per run, not at every evaluation."""
  normalize_params = lambda p, x: normalizer_lib.normalize_uint8(  # noqa: E731
      setup.gen, p, jnp.asarray(target_u8, jnp.uint8), x)
  grid_fn = jax.jit(normalize_params)
  evaluator = consistency.ConsistencyEval(normalize_params, perception,
                                          sharding.batch_sharding(setup.mesh),
                                          config.get("exp_output", "embedding"))
  n = min(config.eval.grid_size, len(eval_source))
  grid_images = np.stack([eval_source[i]["image"] for i in range(n)])

  def evaluate(state, step, writer):
    grid = image_rows(functools.partial(grid_fn, state.g_params), grid_images, target_u8)
    writer.write_images(step, {"original|target|normalized": grid})
    if jax.process_index() == 0:
      from PIL import Image
      Image.fromarray(grid).save(os.path.join(workdir, "stage1_grid.png"))
    return evaluator(state.g_params, eval_source, target_subject, config.input.eval_batch_size,
                     config.eval.max_examples, target_u8)

  return evaluate


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       stop_at: int | None = None, on_step=None) -> dict[str, Any]:
  """Trains F_nor per `config` into `workdir`; `stop_at` ends early (as a preemption)."""
  sharding.check_batch_size(config.input.batch_size, sharding.make_mesh(config.mesh))
  loop.nan_policy(config)
  workdir = os.path.abspath(os.path.expanduser(workdir))
  config = ensure_perception(config, workdir)
  workdir = workdir_lib.prepare(config, workdir)
  perception = load_perception(config)
  target_u8, target_subject = images_lib.load_target(config.target, config.data)
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
  logging.info("Stage 1: %d train faces, %d steps of batch %d on mesh %s.", len(train_source),
               steps, config.input.batch_size, dict(mesh.shape))
  pv = jax.device_put({k: perception.variables[k] for k in LOSS_NETS}, sharding.replicated(mesh))
  fns = perception.functions(config.get("exp_output", "embedding"))
  loader = data_loader.train_loader(train_source, batch_size=config.input.batch_size, seed=config.seed,
                                 keys=keys, worker_count=config.input.workers,
                                 prefetch=config.input.prefetch)
  after_init = checkpointing.init_from_hook(config, "g_params", pretrained_encoder=True)
  train_step = make_train_step(setup.gen, setup.disc, fns, config, setup.g_tx, setup.d_tx,
                               target_u8 if config.get("fixed_target", False) else None)
  stage = loop.Stage(
      name="stage1", mesh=mesh, init_fn=setup.init_fn, init_rng=setup.init_rng,
      step_rng=setup.step_rng, abstract_state=setup.abstract_state,
      state_shardings=setup.state_shardings, train_step=train_step, step_args=(pv,),
      loader=loader, steps=steps, batch_size=config.input.batch_size,
      evaluate=make_eval_hook(config, setup, perception, eval_source, target_u8,
                              target_subject, workdir),
      after_init=after_init)
  out = loop.run(config, workdir, stage, stop_at=stop_at, on_step=on_step)
  return {**out, "generator": setup.gen, "target": target_u8}
