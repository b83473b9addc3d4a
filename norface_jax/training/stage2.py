"""Stage 2 trainer: F_cla (ViT + Input/Output MoE) for AU detection, AU intensity, FER.

Read top to bottom: build mesh, data, model and state; restore if a checkpoint exists;
loop over a jitted, donated `train_step`; log, evaluate, checkpoint. The step is a
pure function `train_step(state, batch, rng) -> (state, metrics)` compiled once; the
per-step randomness is `fold_in(rng, step)`, so a resumed run replays exactly.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from clu import parameter_overview

from norface_jax.data import augment as augment_lib
from norface_jax.data import pipeline
from norface_jax.data import registry
from norface_jax.evaluation import plots
from norface_jax.losses import classification as cls_losses
from norface_jax.losses import moe as moe_losses
from norface_jax.models import classifier as classifier_lib
from norface_jax.models import vit as vit_lib
from norface_jax.training import checkpointing
from norface_jax.training import multihost
from norface_jax.training import optim
from norface_jax.training import sharding
from norface_jax.training import tasks as tasks_lib
from norface_jax.training import writers

# MAE/ImageNet statistics: the encoders are pre-trained with them.
IMAGE_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGE_STD = np.array([0.229, 0.224, 0.225], np.float32)


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


def online(config: ml_collections.ConfigDict) -> bool:
  """I_n made inside the step by a frozen stage-1 generator."""
  return uses_normalized(config) and config.data.normalization == "online"


def batch_keys(config: ml_collections.ConfigDict, task: tasks_lib.Task) -> tuple[str, ...]:
  keys = ["image", task.label_key]
  if uses_normalized(config) and not online(config):
    keys.append("image_norm")
  return tuple(keys)


def load_online_normalizer(config: ml_collections.ConfigDict):
  """(normalize(frozen, images_u8) -> images_u8, frozen pytree) for `online` mode, or (None, None).

  `frozen` = the stage-1 generator's params and the fixed target face; it is passed to
  the jitted steps as an argument (not closed over) so it is not baked into the program.
  """
  if not online(config):
    return None, None
  from norface_jax.training import normalize, stage1
  workdir = config.data.get("stage1_workdir", "")
  if not workdir:
    raise ValueError("config.data.normalization='online' needs config.data.stage1_workdir "
                     "(a trained stage-1 workdir)")
  s1_config, generator, params, step = stage1.load_generator(workdir)
  if s1_config.data.image_size != config.data.image_size:
    raise ValueError(f"stage-1 generator of {workdir} works at {s1_config.data.image_size} px, "
                     f"config.data.image_size is {config.data.image_size}")
  target = config.data.get("online_target", "") or s1_config.target
  target_u8, _ = normalize.load_target(target, s1_config.data)
  logging.info("Online normalization: F_nor of step %d from %s onto %s.", step, workdir, target)

  def normalize_fn(frozen, images_u8):
    return jax.lax.stop_gradient(
        normalize.normalize_apply(generator, frozen["params"], frozen["target"], images_u8))

  return normalize_fn, {"params": params, "target": jnp.asarray(target_u8)}


def preprocess(images_u8: jax.Array, dtype: Any) -> jax.Array:
  """uint8 (B,H,W,3) -> normalized float in the compute dtype."""
  x = images_u8.astype(jnp.float32) / 255.0
  return ((x - IMAGE_MEAN) / IMAGE_STD).astype(dtype)


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


def augment_streams(rng: jax.Array, x: jax.Array, x_n: jax.Array | None, targets: jax.Array,
                    aug_config: dict[str, Any]) -> tuple[jax.Array, jax.Array | None, jax.Array]:
  """Same geometric and colour transform on I_o and I_n (channel-stacked), mixed labels."""
  if x_n is None:
    x, targets = augment_lib.augment_batch(rng, x, targets, aug_config)
    return x, None, targets
  (x, x_n), targets = augment_lib.augment_batch(rng, (x, x_n), targets, aug_config)
  return x, x_n, targets


def make_train_step(model, task, config, tx, normalize_fn=None):
  """The pure train step `(state, batch, rng, frozen) -> (state, metrics)`.

  `jax.jit`ted by the caller with shardings and donation. `frozen` holds what stays
  fixed (the online stage-1 generator and target), or None.
  """
  dtype = jnp.dtype(config.dtype)
  aug_config = dict(config.augment)
  lam_imp, lam_gl = config.loss.lambda_imp, config.loss.lambda_gl
  smoothing = config.loss.label_smoothing
  two_streams = uses_normalized(config)
  skip_nonfinite = config.nan_policy == "skip"

  def train_step(state: optim.TrainState, batch: dict[str, jax.Array], rng: jax.Array,
                 frozen: Any = None):
    if normalize_fn is not None:
      batch = dict(batch, image_norm=normalize_fn(frozen, batch["image"]))
    step_rng = jax.random.fold_in(rng, state.step)
    aug_rng, router_rng, dropout_rng = jax.random.split(step_rng, 3)
    x = batch["image"].astype(jnp.float32) / 255.0
    x_n = batch["image_norm"].astype(jnp.float32) / 255.0 if two_streams else None
    targets = task.soft_targets(batch[task.label_key])
    x, x_n, targets = augment_streams(aug_rng, x, x_n, targets, aug_config)
    norm = lambda im: ((im - IMAGE_MEAN) / IMAGE_STD).astype(dtype)
    x = norm(x)
    x_n = norm(x_n) if two_streams else None

    def loss_fn(params):
      outputs, aux = model.apply({"params": params}, x, x_n, train=True,
                                 rngs={"router": router_rng, "dropout": dropout_rng})
      cla = task.loss(outputs, targets, smoothing)
      r = router_losses(aux)
      total = cla + lam_imp * r["importance"] + lam_gl * (r["global_entropy"] + r["local_entropy"])
      stats = {f"router/{name}/load_e{e}": block["load"][e]
               for name, block in aux.items() if "load" in block
               for e in range(block["load"].shape[0])}
      return total, {"loss/cla": cla, **{f"loss/{k}": v for k, v in r.items()}, **stats}

    (total, aux_metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    finite = jnp.isfinite(total) & jnp.isfinite(optax.tree.norm(grads))
    if skip_nonfinite:  # Keep the old state when the update is not finite.
      params, opt_state = jax.tree.map(
          lambda new, old: jnp.where(finite, new, old), (params, opt_state),
          (state.params, state.opt_state))
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    metrics = {"training_loss": total, **aux_metrics,
               "l2_grads": optax.tree.norm(grads), "l2_params": optax.tree.norm(params),
               "l2_updates": optax.tree.norm(updates), "nonfinite": 1.0 - finite.astype(jnp.float32)}
    return new_state, metrics

  return train_step


def make_eval_step(model, task, config, normalize_fn=None):
  dtype = jnp.dtype(config.dtype)
  two_streams = uses_normalized(config)

  def eval_step(params, batch, frozen=None):
    if normalize_fn is not None:
      batch = dict(batch, image_norm=normalize_fn(frozen, batch["image"]))
    x = preprocess(batch["image"], dtype)
    x_n = preprocess(batch["image_norm"], dtype) if two_streams else None
    outputs, aux = model.apply({"params": params}, x, x_n, train=False)
    # Labels and the validity mask ride along so every process gets the global arrays.
    out = {"preds": task.predict(outputs)}
    for key, name in ((task.label_key, "labels"), ("_valid", "valid")):
      if key in batch:
        out[name] = batch[key]
    if "output_moe" in aux and "topk_idx" in aux["output_moe"]:
      out["topk_idx"] = aux["output_moe"]["topk_idx"]
    return out

  return eval_step


def total_steps(config, num_train_examples: int) -> int:
  if config.total_steps > 0:
    return int(config.total_steps)
  return max(1, int(config.num_epochs * num_train_examples // config.input.batch_size))


def init_state(config, model, tx, image_size: int):
  two_streams = uses_normalized(config)
  x = jnp.zeros((1, image_size, image_size, 3), jnp.dtype(config.dtype))

  def init_fn(r):
    params_rng, router_rng, dropout_rng = jax.random.split(r, 3)
    variables = model.init({"params": params_rng, "router": router_rng, "dropout": dropout_rng},
                           x, x if two_streams else None, train=False)
    params = variables["params"]
    return optim.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

  return init_fn


def load_pretrained(state: optim.TrainState, path: str, key: str) -> optim.TrainState:
  """Grafts the `key` subtree of a checkpoint's params (e.g. a pre-trained encoder)."""
  import orbax.checkpoint as ocp
  path = os.path.abspath(os.path.expanduser(path))
  mgr = ocp.CheckpointManager(path)
  step = mgr.latest_step()
  if step is None:
    raise FileNotFoundError(f"config.init_from={path!r}: no checkpoint there")
  loaded = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
  mgr.close()
  src = loaded["params"] if "params" in loaded else loaded
  if key not in src:
    raise KeyError(f"config.init_from_key={key!r} not in {path} params; has {sorted(src)}")
  dst = state.params[key]
  flat_src = dict(jax.tree_util.tree_flatten_with_path(src[key])[0])
  flat_dst, treedef = jax.tree_util.tree_flatten_with_path(dst)
  missing = [jax.tree_util.keystr(p) for p, _ in flat_dst if p not in flat_src]
  if missing:
    raise KeyError(f"init_from {path}: parameters missing: {missing[:5]}...")
  unused = sorted(set(map(jax.tree_util.keystr, flat_src))
                  - {jax.tree_util.keystr(p) for p, _ in flat_dst})
  if unused:  # E.g. a learned `pos_embedding` while config.model.pos_embed="sincos".
    logging.warning("init_from %s: checkpoint parameters the model has no place for, "
                    "ignored: %s", path, unused[:5])
  new_leaves = []
  for p, leaf in flat_dst:
    value = flat_src[p]
    if value.shape != leaf.shape:
      raise ValueError(f"init_from {path}: {jax.tree_util.keystr(p)} has shape {value.shape}, "
                       f"model expects {leaf.shape}" + (
                           " (re-import with --image_size=config.data.image_size)"
                           if "pos_embedding" in jax.tree_util.keystr(p) else ""))
    new_leaves.append(jax.device_put(np.asarray(value, leaf.dtype), leaf.sharding))
  params = dict(state.params)
  params[key] = jax.tree_util.tree_unflatten(jax.tree.structure(dst), new_leaves)
  logging.info("Initialised params[%r] from %s (step %d).", key, path, step)
  return state.replace(params=params)


def evaluate(eval_fn, params, source, task: tasks_lib.Task, config, mesh,
             keys: tuple[str, ...], frozen: Any = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  """Runs the evaluation set; returns (metrics, raw arrays).

  `task` is the evaluation task (`registry.eval_task`): across datasets it covers the
  labels both share, and the matching prediction columns are taken.
  """
  _, columns = registry.eval_columns(config.data, config.task)
  preds, labels, topk = [], [], []
  for batch in pipeline.eval_batches(source, batch_size=config.input.eval_batch_size, keys=keys,
                                     max_examples=config.eval.get("max_examples", 0)):
    out = jax.device_get(eval_fn(params, sharding.host_to_global(batch, mesh), frozen))
    valid = out["valid"].astype(bool)
    preds.append(out["preds"][valid])
    labels.append(out["labels"][valid])
    if "topk_idx" in out:
      topk.append(out["topk_idx"][valid])
  preds_np, labels_np = np.concatenate(preds), np.concatenate(labels)
  if columns is not None:
    preds_np = preds_np[:, columns]
  report = task.report(preds_np, labels_np)
  arrays = {"preds": preds_np, "labels": labels_np}
  if topk:
    arrays["topk_idx"] = np.concatenate(topk)
  return report, arrays


def scalar_metrics(report: dict[str, Any]) -> dict[str, float]:
  return {k: float(v) for k, v in report.items() if np.ndim(v) == 0 and not isinstance(v, str)}


def router_figure(arrays, task, config, workdir, step, writer) -> None:
  """The paper's Fig. 8: experts x labels heatmap of the output MoE's top-k routing."""
  if "topk_idx" not in arrays or config.model.num_experts <= 0:
    return
  matrix = plots.router_label_matrix(arrays["topk_idx"], task.positive_labels(arrays["labels"]),
                                     config.model.num_experts)
  fig = plots.router_heatmap(matrix, [f"E{e + 1}" for e in range(config.model.num_experts)],
                             list(task.label_names), title=f"Output MoE top-k routing, step {step}")
  if jax.process_index() == 0:
    plots.save_figure(fig, os.path.join(workdir, "router_heatmap.png"))
  writer.write_images(step, {"router_heatmap": plots.figure_to_array(fig)})


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


def mesh_rules(config, mesh) -> list[tuple[str, Any]]:
  """Config rules restricted to the axes this mesh has."""
  rules = []
  for logical, axes in config.logical_axis_rules:
    axes = axes if isinstance(axes, (tuple, list)) else (axes,)
    kept = tuple(a for a in axes if a in mesh.axis_names)
    rules.append((logical, kept if len(kept) > 1 else (kept[0] if kept else None)))
  return rules


def build(config: ml_collections.ConfigDict, num_train_examples: int) -> Setup:
  """Mesh, model, optimizer and the abstract sharded state (nothing allocated)."""
  task = make_task(config)
  mesh = sharding.make_mesh(config.mesh, dcn_config=config.get("mesh_dcn"))
  sharding.check_batch_size(config.input.batch_size, mesh)
  rules = mesh_rules(config, mesh)
  steps = total_steps(config, num_train_examples)
  model = make_model(config, task)
  init_rng, step_rng = jax.random.split(jax.random.key(config.seed))
  image_size = config.data.image_size
  abstract_params = None
  depth = vit_lib.decode_variant(config.model.encoder)["depth"]
  if config.optim.get("layer_decay", 0.0):
    abstract_params = sharding.logical_state_shardings(
        init_state(config, model, optax.identity(), image_size), mesh, rules, init_rng)[0].params
  tx, schedule = optim.make_optimizer(config.optim, steps, abstract_params, depth)
  init_fn = init_state(config, model, tx, image_size)
  abstract_state, state_shardings = sharding.logical_state_shardings(init_fn, mesh, rules, init_rng)
  return Setup(task, model, mesh, tx, schedule, init_fn, init_rng, step_rng, abstract_state,
               state_shardings, steps)


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a workdir was trained with (written by `train_and_evaluate`)."""
  import json
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: is {workdir!r} a training workdir?")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       stop_at: int | None = None) -> dict[str, Any]:
  """Trains F_cla per `config`, evaluating and checkpointing into `workdir`.

  `stop_at` ends the run early after checkpointing that step, as a preempted job would
  (the schedule still spans the full run, so a resumed run is identical).
  """
  workdir = os.path.abspath(os.path.expanduser(workdir))
  os.makedirs(workdir, exist_ok=True)
  # Configuration errors (mesh vs devices, batch vs mesh) surface before any data work.
  sharding.check_batch_size(config.input.batch_size, sharding.make_mesh(config.mesh, dcn_config=config.get("mesh_dcn")))
  train_source = registry.make_source(config.data, "train", task=config.task)
  eval_source = registry.make_source(config.data, "test", task=config.task)
  setup = build(config, len(train_source))
  task, model, mesh, steps = setup.task, setup.model, setup.mesh, setup.steps
  if task.name == "au_detection" and config.loss.get("au_pos_weight", "none") == "balanced":
    task = dataclasses.replace(task, pos_weight=cls_losses.balanced_pos_weight(
        sample_labels(train_source, task.label_key)))
    logging.info("AU positive weights (balanced on the training labels): %s",
                 dict(zip(task.label_names, np.round(task.pos_weight, 2))))
  state_shardings, schedule, tx = setup.state_shardings, setup.schedule, setup.tx
  init_fn, init_rng, step_rng = setup.init_fn, setup.init_rng, setup.step_rng
  logging.info("Train %d examples, test %d; %d steps of batch %d on mesh %s.",
               len(train_source), len(eval_source), steps, config.input.batch_size, dict(mesh.shape))
  save_config(config, workdir)
  test_task = registry.eval_task(task, config.data)

  writer = writers.MetricWriter(workdir)
  writer.write_hparams(config.to_dict() if hasattr(config, "to_dict") else dict(config))
  keys = batch_keys(config, task)
  loader = pipeline.train_loader(train_source, batch_size=config.input.batch_size, seed=config.seed, keys=keys,
                                 worker_count=config.input.workers, prefetch=config.input.prefetch)
  data_iter = iter(loader)
  ckpt = checkpointing.Checkpointer(workdir, keep=config.keep_checkpoints,
                                    best_metric=config.eval.best_metric,
                                    best_mode=config.eval.best_mode)
  if ckpt.latest_step() is not None:
    state, start = ckpt.restore(setup.restore_target(), data_iter)
  else:
    state = jax.jit(lambda r: nn.unbox(init_fn(r)), out_shardings=state_shardings)(init_rng)
    if config.init_from:
      state = load_pretrained(state, config.init_from, config.init_from_key)
    start = 0

  if jax.process_index() == 0:
    logging.info("F_cla parameters:\n%s", parameter_overview.get_parameter_overview(
        setup.abstract_state.params, include_stats=False, max_lines=60))
  batch_shardings = sharding.batch_sharding(mesh)
  repl = sharding.replicated(mesh)
  normalize_fn, frozen = load_online_normalizer(config)
  if frozen is not None:
    frozen = jax.device_put(frozen, repl)
  train_step = jax.jit(make_train_step(model, task, config, tx, normalize_fn),
                       in_shardings=(state_shardings, batch_shardings, repl, repl),
                       out_shardings=(state_shardings, repl), donate_argnums=(0,))
  eval_fn = jax.jit(make_eval_step(model, task, config, normalize_fn),
                    in_shardings=(state_shardings.params, batch_shardings, repl), out_shardings=repl)

  progress = writers.ProgressReport(num_train_steps=steps, batch_size=config.input.batch_size,
                                    writer=writer, every_steps=config.log_every)
  guard = multihost.PreemptionGuard(check_every=config.get("preemption_check_every", 10))
  pending: list[dict[str, jax.Array]] = []
  last_report: dict[str, Any] = {}
  logging.info("Training from step %d to %d.", start, steps)
  for step in range(start + 1, steps + 1):
    batch = sharding.host_to_global(next(data_iter), mesh)
    state, metrics = train_step(state, batch, step_rng, frozen)
    pending.append(metrics)
    if step % config.log_every == 0 or step == steps:
      host = jax.device_get(pending)  # The only host sync, once per log interval.
      pending = []
      mean = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
      mean["learning_rate"] = float(schedule(step - 1))
      if not np.isfinite(host[-1]["training_loss"]) and config.nan_policy == "stop":
        raise FloatingPointError(
            f"non-finite training loss {host[-1]['training_loss']} at step {step} "
            f"(components: { {k: v for k, v in host[-1].items() if k.startswith('loss/')} })")
      writer.write_scalars(step, mean)
      progress(step)
    if step % config.eval_every == 0 or step == steps:
      t0 = time.perf_counter()
      report, arrays = evaluate(eval_fn, state.params, eval_source, test_task, config, mesh, keys,
                                frozen)
      scalars = scalar_metrics(report)
      writer.write_scalars(step, {f"eval/{k}": v for k, v in scalars.items()})
      router_figure(arrays, test_task, config, workdir, step, writer)
      ckpt.save_best(step, state, scalars)
      last_report = report
      progress.exclude(time.perf_counter() - t0)
    preempted = guard.should_stop(step)
    if step % config.checkpoint_every == 0 or step == steps or step == stop_at or preempted:
      t0 = time.perf_counter()
      ckpt.save(step, state, data_iter, force=True)
      progress.exclude(time.perf_counter() - t0)
    if step == stop_at or preempted:
      logging.info("Stopping at step %d (%s); the checkpoint resumes here.", step,
                   "preempted" if preempted else "stop_at")
      break
  guard.close()
  ckpt.close()
  writer.close()
  if not last_report and start >= steps:
    logging.info("Nothing to do: checkpoint at step %d >= %d steps.", start, steps)
  return {"state": state, "report": last_report, "steps": steps, "task": task}
