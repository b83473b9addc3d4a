"""Stage 2: F_cla (ViT + Input/Output MoE) for AU detection, AU intensity and FER.

What is stage 2's own: the model and task from the config, the pure `train_step(state,
batch, rng, frozen) -> (state, metrics)` (augmentation, the task loss and the router
losses), the eval step and hook, and `build` (mesh, optimizer, sharded abstract state).
`train_and_evaluate` hands them to the one loop (`training/loop.py`), which owns
restore-or-init, logging, the NaN policy, preemption, evaluation cadence and checkpoints.
The per-step randomness is `fold_in(rng, step)`, so a resumed run replays exactly.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from clu import parameter_overview

from norface_jax.data import augment as augment_lib
from norface_jax.data import images as images_lib
from norface_jax.data import loader as data_loader
from norface_jax.data import registry
from norface_jax.evaluation import classifier_eval
from norface_jax.losses import classification as cls_losses
from norface_jax.losses import moe as moe_losses
from norface_jax.models import classifier as classifier_lib
from norface_jax.models import normalizer as normalizer_lib
from norface_jax.models import vit as vit_lib
from norface_jax.training import checkpointing
from norface_jax.training import loop
from norface_jax.training import optim
from norface_jax.training import perception_nets
from norface_jax.training import sharding
from norface_jax.training import stage1
from norface_jax.training import stage2_config
from norface_jax.training import tasks as tasks_lib
from norface_jax.training import workdir as workdir_lib
from norface_jax.training import writers


def make_task(config: ml_collections.ConfigDict) -> tasks_lib.Task:
  return tasks_lib.Task(config.task, registry.label_names(config.data, config.task))


def sample_labels(source, key: str, max_items: int = 4096) -> np.ndarray:
  """`key` of up to `max_items` items spread evenly over the source (label statistics;
  reading an item of an on-disk dataset decodes its image, so this is capped)."""
  n = len(source)
  idx = np.unique(np.linspace(0, n - 1, min(n, max_items)).astype(int))
  return np.stack([np.asarray(source[int(i)][key]) for i in idx])


def make_model(config: ml_collections.ConfigDict, task: tasks_lib.Task) -> nn.Module:
  m = config.model
  return classifier_lib.NorfaceClassifier(
      encoder=m.encoder, num_outputs=task.num_outputs, streams=tuple(m.streams),
      use_input_moe=m.use_input_moe, use_output_moe=m.use_output_moe,
      num_experts=m.num_experts, top_k=m.top_k, expert_hidden=m.expert_hidden or None,
      pool=m.pool, router_noise=m.router_noise, dispatch=m.dispatch,
      remat=m.remat, scan=m.scan, pos_embed=m.get("pos_embed", "sincos"),
      moe_residual=m.get("moe_residual", True), attention=m.get("attention", "auto"),
      remat_policy=m.get("remat_policy", ""),
      head_init_std=head_init_std(config), dtype=jnp.dtype(config.dtype))


def head_init_std(config: ml_collections.ConfigDict) -> float:
  """The head kernel's init std from `config.model.head_init` (0: lecun_normal).

  "auto" (default): MAE's fine-tuning init (trunc_normal 2e-5) when the encoder starts
  from a checkpoint (`config.init_from`), lecun_normal from a random encoder, where a
  2e-5 head leaves the encoder without gradient and training flat. "mae" and "lecun"
  force either.
  """
  choice = config.model.get("head_init", "auto")
  stds = {"auto": 2e-5 if config.get("init_from") else 0.0, "mae": 2e-5, "lecun": 0.0}
  if choice not in stds:
    raise ValueError(f"config.model.head_init={choice!r}; expected one of {sorted(stds)}")
  return stds[choice]


def uses_normalized(config: ml_collections.ConfigDict) -> bool:
  return "norm" in tuple(config.model.streams)


def uses_features(config: ml_collections.ConfigDict) -> bool:
  """Table 9's "w/ E_exp&E_eye": the frozen stage-1 expression and eyebrow networks'
  outputs on I_o as a stream (`config.data.perception_dir`)."""
  return "features" in tuple(config.model.streams)


def online(config: ml_collections.ConfigDict) -> bool:
  """I_n made inside the step by a frozen stage-1 generator."""
  return uses_normalized(config) and config.data.normalization == "online"


def batch_keys(config: ml_collections.ConfigDict, task: tasks_lib.Task) -> tuple[str, ...]:
  keys = ["image", task.label_key]
  if uses_normalized(config) and not online(config):
    keys.append("image_norm")
  return tuple(keys)


def load_frozen(config: ml_collections.ConfigDict):
  """(prepare(frozen, batch) -> batch, frozen pytree), or (None, None) when stage 2
  needs no frozen network.

  `online` normalization adds `image_norm`, made by a frozen stage-1 generator onto the
  fixed target face; the `features` stream adds `features` (B, F), the frozen stage-1
  expression and eyebrow networks' outputs on I_o. `frozen` holds their variables; it
  is passed to the jitted steps as an argument (not closed over) so it is not baked
  into the program.
  """
  parts, frozen = [], {}
  if online(config):
    normalize_fn, frozen["normalizer"] = _online_normalizer(config)
    parts.append(lambda f, batch: dict(batch, image_norm=normalize_fn(f["normalizer"],
                                                                      batch["image"])))
  if uses_features(config):
    features_fn, frozen["features"] = _feature_networks(config)
    parts.append(lambda f, batch: dict(batch, features=features_fn(f["features"],
                                                                   batch["image"])))
  if not parts:
    return None, None

  def prepare(f, batch):
    for part in parts:
      batch = part(f, batch)
    return batch

  return prepare, frozen


def _online_normalizer(config: ml_collections.ConfigDict):
  workdir = config.data.get("stage1_workdir", "")
  if not workdir:
    raise ValueError("config.data.normalization='online' needs config.data.stage1_workdir "
                     "(a trained stage-1 workdir)")
  s1_config, generator, params, step = stage1.load_generator(workdir)
  if s1_config.data.image_size != config.data.image_size:
    raise ValueError(f"stage-1 generator of {workdir} works at {s1_config.data.image_size} px, "
                     f"config.data.image_size is {config.data.image_size}")
  target = config.data.get("online_target", "") or s1_config.target
  target_u8, _ = images_lib.load_target(target, s1_config.data)
  logging.info("Online normalization: F_nor of step %d from %s onto %s.", step, workdir, target)

  def normalize_fn(frozen, images_u8):
    return jax.lax.stop_gradient(
        normalizer_lib.normalize_uint8(generator, frozen["params"], frozen["target"], images_u8))

  return normalize_fn, {"params": params, "target": jnp.asarray(target_u8)}


FEATURE_NETS = ("expression", "eyebrow")


def _feature_networks(config: ml_collections.ConfigDict):
  """features(variables, images_u8) -> (B, F): [E_exp(I_o), E_eye(I_o)], as stage 1's
  L_exp and L_eye see them (`perception.functions`), with their variables."""
  directory = config.data.get("perception_dir", "")
  if not directory:
    raise ValueError("the 'features' stream needs config.data.perception_dir (stage 1's "
                     "perception networks: launch/import_perception.py or "
                     "configs/perception_synthfacs.py)")
  nets = _load_feature_nets(os.path.abspath(os.path.expanduser(directory)))
  fns = nets.functions()

  def features_fn(variables, images_u8):
    x01 = images_u8.astype(jnp.float32) / 255.0
    out = [fns[n](variables[n], x01).reshape(images_u8.shape[0], -1) for n in FEATURE_NETS]
    return jax.lax.stop_gradient(jnp.concatenate(out, axis=-1))

  return features_fn, {n: nets.variables[n] for n in FEATURE_NETS}


@functools.lru_cache(maxsize=2)
def _load_feature_nets(directory: str):
  """The perception networks, read once per process (`build` needs their output width,
  the trainer their variables)."""
  return perception_nets.load(directory)


def feature_dim(config: ml_collections.ConfigDict) -> int:
  """F of the features stream (0 without it), from the networks' output shapes."""
  if not uses_features(config):
    return 0
  features_fn, variables = _feature_networks(config)
  size = config.data.image_size
  out = jax.eval_shape(features_fn, variables, jax.ShapeDtypeStruct((1, size, size, 3), jnp.uint8))
  return int(out.shape[-1])


def router_losses(aux: dict[str, dict[str, jax.Array]]) -> dict[str, jax.Array]:
  """Unweighted importance, global and local entropy losses summed over MoE blocks."""
  zero = jnp.zeros((), jnp.float32)
  out = {"importance": zero, "global_entropy": zero, "local_entropy": zero}
  for block in aux.values():
    if "gates" not in block:
      continue
    out["importance"] += moe_losses.importance_loss(block["gates"].astype(jnp.float32))
    out["global_entropy"] += moe_losses.global_entropy_loss(block["probs"].astype(jnp.float32))
    out["local_entropy"] += moe_losses.local_entropy_loss(block["probs"].astype(jnp.float32))
  return out


def total_loss(cla: jax.Array, router: dict[str, jax.Array], loss_config: Any) -> jax.Array:
  """L = L_cla + lambda_imp L_imp + lambda_global L_global + lambda_local L_local (eq. 11,
  with the paper's single lambda_g&l split in two for table 12's rows)."""
  return (cla + loss_config.lambda_imp * router["importance"]
          + loss_config.lambda_global * router["global_entropy"]
          + loss_config.lambda_local * router["local_entropy"])


def augment_streams(rng: jax.Array, x: jax.Array, x_n: jax.Array | None, targets: jax.Array,
                    aug_config: dict[str, Any]) -> tuple[jax.Array, jax.Array | None, jax.Array]:
  """Same geometric and colour transform on I_o and I_n (channel-stacked), mixed labels."""
  if x_n is None:
    x, targets = augment_lib.augment_batch(rng, x, targets, aug_config)
    return x, None, targets
  (x, x_n), targets = augment_lib.augment_batch(rng, (x, x_n), targets, aug_config)
  return x, x_n, targets


def make_train_step(model, task, config, tx, prepare_fn=None):
  """The pure train step `(state, batch, rng, frozen) -> (state, metrics)`.

  `jax.jit`ted by the caller with shardings and donation. `frozen` holds what stays
  fixed (the online stage-1 generator and target), or None.
  """
  dtype = jnp.dtype(config.dtype)
  aug_config = dict(config.augment)
  smoothing = config.loss.label_smoothing
  two_streams = uses_normalized(config)

  def train_step(state: optim.TrainState, batch: dict[str, jax.Array], rng: jax.Array,
                 frozen: Any = None):
    if prepare_fn is not None:  # I_n and / or features from the frozen networks.
      batch = prepare_fn(frozen, batch)
    step_rng = jax.random.fold_in(rng, state.step)
    aug_rng, router_rng, dropout_rng = jax.random.split(step_rng, 3)
    x = batch["image"].astype(jnp.float32) / 255.0
    x_n = batch["image_norm"].astype(jnp.float32) / 255.0 if two_streams else None
    targets = task.soft_targets(batch[task.label_key])
    x, x_n, targets = augment_streams(aug_rng, x, x_n, targets, aug_config)
    norm = lambda im: ((im - images_lib.IMAGE_MEAN) / images_lib.IMAGE_STD).astype(dtype)
    x = norm(x)
    x_n = norm(x_n) if two_streams else None

    def loss_fn(params):
      outputs, aux = model.apply({"params": params}, x, x_n, features=batch.get("features"),
                                 train=True,
                                 rngs={"router": router_rng, "dropout": dropout_rng})
      cla = task.loss(outputs, targets, smoothing)
      r = router_losses(aux)
      total = total_loss(cla, r, config.loss)
      stats = {f"router/{name}/load_e{e}": block["load"][e]
               for name, block in aux.items() if "load" in block
               for e in range(block["load"].shape[0])}
      return total, {"loss/cla": cla, **{f"loss/{k}": v for k, v in r.items()}, **stats}

    (total, aux_metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    metrics = {"training_loss": total, **aux_metrics,
               "l2_grads": optax.tree.norm(grads), "l2_params": optax.tree.norm(params),
               "l2_updates": optax.tree.norm(updates)}
    return new_state, metrics

  return train_step


def make_eval_step(model, task, config, prepare_fn=None):
  dtype = jnp.dtype(config.dtype)
  two_streams = uses_normalized(config)

  def eval_step(params, batch, frozen=None):
    if prepare_fn is not None:
      batch = prepare_fn(frozen, batch)
    x = images_lib.standardize(batch["image"], dtype)
    x_n = images_lib.standardize(batch["image_norm"], dtype) if two_streams else None
    outputs, aux = model.apply({"params": params}, x, x_n, features=batch.get("features"),
                               train=False)
    # Labels and the validity mask ride along so every process gets the global arrays.
    out = {"preds": task.predict(outputs)}
    for key, name in ((task.label_key, "labels"), ("_valid", "valid")):
      if key in batch:
        out[name] = batch[key]
    if "output_moe" in aux and "topk_idx" in aux["output_moe"]:
      out["topk_idx"] = aux["output_moe"]["topk_idx"]
    return out

  return eval_step


def init_state(config, model, tx, image_size: int, features: int = 0):
  two_streams = uses_normalized(config)
  x = jnp.zeros((1, image_size, image_size, 3), jnp.dtype(config.dtype))
  f = jnp.zeros((1, features), jnp.float32) if features else None

  def init_fn(r):
    params_rng, router_rng, dropout_rng = jax.random.split(r, 3)
    variables = model.init({"params": params_rng, "router": router_rng, "dropout": dropout_rng},
                           x, x if two_streams else None, features=f, train=False)
    params = variables["params"]
    return optim.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

  return init_fn


@dataclasses.dataclass
class Setup:
  """What both training and evaluation need: model, mesh, optimizer, state layout."""
  task: tasks_lib.Task
  model: nn.Module
  mesh: Any
  tx: Any
  schedule: Any
  init_fn: Any
  init_rng: jax.Array
  step_rng: jax.Array
  abstract_state: Any
  state_shardings: Any
  steps: int

  def restore_target(self):
    return sharding.restore_target(self.abstract_state, self.state_shardings)


def build(config: ml_collections.ConfigDict, num_train_examples: int) -> Setup:
  """Mesh, model, optimizer and the abstract sharded state (nothing allocated)."""
  task = make_task(config)
  mesh = sharding.make_mesh(config.mesh, dcn_config=config.get("mesh_dcn"))
  sharding.check_batch_size(config.input.batch_size, mesh)
  rules = sharding.mesh_rules(config.logical_axis_rules, mesh)
  steps = loop.total_steps(config, num_train_examples)
  model = make_model(config, task)
  init_rng, step_rng = jax.random.split(jax.random.key(config.seed))
  image_size = config.data.image_size
  features = feature_dim(config)
  abstract_params = None
  depth = vit_lib.decode_variant(config.model.encoder)["depth"]
  if config.optim.get("layer_decay", 0.0):
    abstract_params = sharding.logical_state_shardings(
        init_state(config, model, optax.identity(), image_size, features), mesh, rules,
        init_rng)[0].params
  tx, schedule = optim.make_optimizer(config.optim, steps, abstract_params, depth)
  init_fn = init_state(config, model, tx, image_size, features)
  abstract_state, state_shardings = sharding.logical_state_shardings(init_fn, mesh, rules, init_rng)
  return Setup(task, model, mesh, tx, schedule, init_fn, init_rng, step_rng, abstract_state,
               state_shardings, steps)


def make_eval_hook(eval_fn, source, task, config, mesh, keys, frozen, workdir):
  """(`evaluate(state, step, writer)` for the loop: `source`'s scalars and Fig. 8, and a
  dict that keeps the last evaluation's {step: (report, arrays)} when it covered the
  whole split, which `final_test` then need not recompute)."""
  put = lambda batch: sharding.host_to_global(batch, mesh)  # noqa: E731
  whole = {}

  def evaluate(state, step, writer):
    report, arrays = classifier_eval.evaluate(eval_fn, state.params, source, task, config, put,
                                              keys, frozen)
    classifier_eval.router_figure(arrays, task, config.model.num_experts, workdir, step, writer)
    whole.clear()
    if not config.eval.get("max_examples", 0):
      whole[int(step)] = (report, arrays)
    return classifier_eval.scalar_metrics(report)

  return evaluate, whole


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       stop_at: int | None = None, on_step=None) -> dict[str, Any]:
  """Trains F_cla per `config`, evaluating and checkpointing into `workdir`.

  `stop_at` ends the run early after checkpointing that step, as a preempted job would
  (the schedule still spans the full run, so a resumed run is identical).
  """
  # Configuration errors (mesh vs devices, batch vs mesh) surface before any data work.
  sharding.check_batch_size(config.input.batch_size,
                            sharding.make_mesh(config.mesh, dcn_config=config.get("mesh_dcn")))
  loop.nan_policy(config)
  workdir = workdir_lib.prepare(config, workdir)
  select = check_selection(config)
  train_source = registry.make_source(config.data, "train", task=config.task)
  eval_source = registry.make_source(config.data, "test", task=config.task)
  val_source = (registry.make_source(config.data, "val", task=config.task)
                if select == "val" else None)
  setup = build(config, len(train_source))
  task, mesh, steps = setup.task, setup.mesh, setup.steps
  if task.name == "au_detection" and config.loss.get("au_pos_weight", "none") == "balanced":
    task = dataclasses.replace(task, pos_weight=cls_losses.balanced_pos_weight(
        sample_labels(train_source, task.label_key)))
    logging.debug("AU positive weights (balanced on the training labels): %s",
                  ", ".join(f"{n}={w:.2f}" for n, w in zip(task.label_names, task.pos_weight)))
  logging.info("Stage 2: %d train / %s%d test examples; %d steps of batch %d on mesh %s.",
               len(train_source), f"{len(val_source)} validation / " if val_source else "",
               len(eval_source), steps, config.input.batch_size, dict(mesh.shape))
  logging.debug("F_cla parameters:\n%s", parameter_overview.get_parameter_overview(
      setup.abstract_state.params, include_stats=False, max_lines=60))
  test_task = registry.eval_task(task, config.data)
  keys = batch_keys(config, task)
  loader = data_loader.train_loader(train_source, batch_size=config.input.batch_size, seed=config.seed,
                                 keys=keys, worker_count=config.input.workers,
                                 prefetch=config.input.prefetch)
  repl = sharding.replicated(mesh)
  prepare_fn, frozen = load_frozen(config)
  if frozen is not None:
    frozen = jax.device_put(frozen, repl)
  eval_fn = jax.jit(make_eval_step(setup.model, task, config, prepare_fn),
                    in_shardings=(setup.state_shardings.params, sharding.batch_sharding(mesh),
                                  repl), out_shardings=repl)
  # Every eval_every steps: the validation subjects (select='val', which also keep the
  # best checkpoint), or the test split as a curve only (select='last').
  evaluate, whole = make_eval_hook(eval_fn, val_source or eval_source,
                                   task if val_source else test_task, config, mesh, keys, frozen,
                                   workdir)
  after_init = checkpointing.init_from_hook(config, pretrained_encoder=True)
  stage = loop.Stage(
      name="stage2", mesh=mesh, init_fn=setup.init_fn, init_rng=setup.init_rng,
      step_rng=setup.step_rng, abstract_state=setup.abstract_state,
      state_shardings=setup.state_shardings,
      train_step=make_train_step(setup.model, task, config, setup.tx, prepare_fn),
      step_args=(frozen,), loader=loader, steps=steps, batch_size=config.input.batch_size,
      schedule=setup.schedule, evaluate=evaluate, after_init=after_init,
      eval_prefix="val" if val_source else "eval",
      best_metric=config.eval.best_metric if val_source else None,
      best_mode=config.eval.best_mode)
  out = loop.run(config, workdir, stage, stop_at=stop_at, on_step=on_step)
  report, selection = {}, {}
  if not out["stopped"]:
    report, selection = final_test(config, workdir, setup, eval_fn, eval_source, test_task, keys,
                                   frozen, out["state"], {} if val_source else whole)
  return {**out, "report": report, "selection": selection, "task": task}


def check_selection(config: ml_collections.ConfigDict) -> str:
  """config.eval.select, checked against the data config before any work."""
  select = config.eval.get("select", "val")
  if select not in stage2_config.SELECTIONS:
    raise ValueError(f"config.eval.select={select!r}; expected 'val' (select on held-out "
                     "training subjects) or 'last' (the last step)")
  if select == "val" and float(config.data.get("val_share", 0.0)) <= 0:
    raise ValueError("config.eval.select='val' needs config.data.val_share > 0 (the share of "
                     "training subjects held out); or select='last'")
  if select == "val" and int(config.get("eval_every", 0)) < 0:
    raise ValueError("config.eval.select='val' selects at the evaluations; "
                     "config.eval_every < 0 runs none (use select='last')")
  return select


def selection_record(config: ml_collections.ConfigDict, workdir: str, which: str,
                     step: int) -> dict[str, Any]:
  """What picked the checkpoint of `step` (eval.json's `selection`).

  `which='best'` in a run that selected on validation subjects: {split: 'val', metric,
  mode, step, value}; the last step otherwise: {split: None, rule: 'last', step}.
  """
  if which != "best" or config.eval.get("select", "val") != "val":
    return {"split": None, "metric": None, "rule": "last", "step": int(step)}
  metric = config.eval.best_metric
  values = [r[f"val/{metric}"] for r in writers.read_jsonl(workdir)
            if r.get("step") == step and f"val/{metric}" in r]
  return {"split": "val", "metric": metric, "mode": config.eval.best_mode, "step": int(step),
          "value": float(values[-1]) if values else None}


def final_test(config, workdir, setup, eval_fn, eval_source, test_task, keys, frozen,
               state, done: dict | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
  """The whole test split at the selected checkpoint (and at the last step): `eval.json`.

  Returns (the report at the selected checkpoint: the best on the validation subjects
  (select='val') or the last step (select='last'), its `selection_record`). `eval.json`
  holds both and, under `last`, the test scalars at the last step. `done`: {step:
  (report, arrays)} of the whole test split already evaluated (not redone).
  """
  config = ml_collections.ConfigDict(config.to_dict())
  config.eval.max_examples = 0  # Reported numbers cover the whole test split.
  put = lambda batch: sharding.host_to_global(batch, setup.mesh)  # noqa: E731
  done = done or {}
  if int(state.step) in done:
    last, last_arrays = done[int(state.step)]
  else:
    last, last_arrays = classifier_eval.evaluate(eval_fn, state.params, eval_source, test_task,
                                                 config, put, keys, frozen)
  which = "best" if config.eval.get("select", "val") == "val" else "last"
  report, arrays, step = last, last_arrays, int(state.step)
  best_dir = os.path.join(workdir, "best")
  if which == "best" and checkpointing.saved_step(best_dir) != step:
    best, step = checkpointing.restore_state_only(best_dir, setup.restore_target())
    report, arrays = classifier_eval.evaluate(eval_fn, best.params, eval_source, test_task,
                                              config, put, keys, frozen)
  selection = selection_record(config, workdir, which, step)
  classifier_eval.write_report(report, arrays, test_task, workdir, "", step, selection=selection,
                               extra={"last": {"step": int(state.step),
                                               **classifier_eval.scalar_metrics(last)}})
  return report, selection
