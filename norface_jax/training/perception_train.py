"""Trains the SynthFACS versions of the frozen perception networks from ground truth.

No public weights can be downloaded here, so for SynthFACS the project trains its own
(Norface's losses need them; the generator never sees the ground truth itself):
- `identity`: IResNet embedding with a cosine classifier over the training subjects;
- `landmarks`: IResNet regressor of the 68 landmarks (coordinates / image size);
- `expression`: IResNet embedding with a linear head to the AU intensities / 5: the
  dataset's intensity AUs, or (`nets.exp_targets="all"`) all 17 SynthFACS AUs, a
  whole-face expression embedding as FECNet's;
- `eyebrow`: IResNet regressor of the 4 `brows` channels, standardised;
- `vgg`: a VGG-style `features` stack with identity and AU heads;
- `eval_au`, `eval_id`: independent small conv nets (an AU-intensity regressor and an
  identity classifier) used only to *measure* stage 1 (`stage1_report`).

All are trained jointly in one jitted step on `config.data`'s training split, through
the one loop (`training/loop.py`); the workdir holds an Orbax checkpoint, `config.json`
and `perception.json` (what `perception_nets.load` needs to rebuild them), and after a
complete run `quality.json` (`evaluate`).
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from norface_jax.data import loader as data_loader
from norface_jax.data.synthfacs import generate
from norface_jax.data.synthfacs import presets as presets_lib
from norface_jax.data.synthfacs import source as synth_source
from norface_jax.evaluation import metrics as metrics_lib
from norface_jax.models import perception
from norface_jax.training import loop, sharding, writers
from norface_jax.training import workdir as workdir_lib
from norface_jax.training.perception_nets import (PerceptionState, build_modules,
                                                  exp_au_names, init_variables, load, make_tx,
                                                  _split)

KEYS = ("image", "subject", "landmarks", "brows", "au_intensity", "au_all")


def synthfacs_config(*, preset: str = "bp4d", size: int = 64, steps: int = 500, frames: int = 48,
                     batch: int = 32, eval_head: str = "flatten", lr: float = 1e-3,
                     schedule: str = "cosine", fold: int = 0,
                     exp_arch: str = "iresnet",
                     exp_targets: str = "dataset") -> ml_collections.ConfigDict:
  """The perception trainer's config (`configs/perception_synthfacs.py` and stage 1's
  `config.perception`, which trains them itself when `perception_dir` is empty)."""
  c = ml_collections.ConfigDict()
  c.stage = "perception"
  c.seed = 0
  c.data = dict(dataset=preset, synthetic=True, preset=preset, fold=fold, seed=0,
                image_size=size, frames_per_subject=frames, identity_bias=1.0)
  c.nets = dict(layers=(1, 1, 1, 1), widths=(16, 32, 64, 128), id_dim=64, exp_dim=32,
                vgg_cfg=(16, 16, "M", 32, 32, "M", 64, 64, "M", 128, 128),
                eval_cfg=(32, "M", 64, "M", 128, "M", 128), eval_au_head=eval_head,
                exp_arch=exp_arch, exp_targets=exp_targets)
  c.input = dict(batch_size=batch, workers=0, prefetch=2)
  c.optim = dict(lr=lr, schedule=schedule, warmup_steps=50)
  c.evaluate = True
  c.eval_examples = 512
  c.total_steps = steps
  c.log_every = 50
  c.checkpoint_every = 200
  c.mesh = (("data", -1),)
  return c


def is_trained(workdir: str, total_steps: int) -> bool:
  """Whether `workdir` holds perception networks trained for `total_steps`."""
  path = os.path.join(workdir, "checkpoints")
  if not os.path.exists(os.path.join(workdir, "perception.json")) or not os.path.isdir(path):
    return False
  steps = [int(n) for n in os.listdir(path) if n.isdigit()]
  return bool(steps) and max(steps) >= total_steps


def make_train_step(modules, meta, tx):
  """One update of all seven networks; returns (state, metrics)."""
  lookup = np.full(max(meta["subjects"]) + 1, -1, np.int32)
  lookup[np.asarray(meta["subjects"])] = np.arange(len(meta["subjects"]))
  size = float(meta["image_size"])
  brow_mean, brow_std = np.float32(meta["brow_mean"]), np.float32(meta["brow_std"])
  exp_all = meta["nets"].get("exp_targets", "dataset") == "all"

  def train_step(state: PerceptionState, batch, rng=None):
    del rng  # Deterministic: no augmentation, no dropout.
    x = batch["image"].astype(jnp.float32) / 255.0
    cls = jnp.asarray(lookup)[batch["subject"]]
    lm = batch["landmarks"].reshape(x.shape[0], -1) / size
    aus = batch["au_intensity"] / 5.0
    exp_aus = batch["au_all"] / 5.0 if exp_all else aus
    brows = (batch["brows"] - brow_mean) / brow_std
    ce = lambda logits: optax.softmax_cross_entropy_with_integer_labels(logits, cls).mean()
    mse = lambda a, b: jnp.mean((a - b) ** 2)

    def loss_fn(params):
      out, new_stats = {}, {}
      for name, m in modules.items():
        v = {"params": params[name]}
        if name in state.batch_stats:
          v["batch_stats"] = state.batch_stats[name]
          out[name], upd = m.apply(v, x, True, mutable=["batch_stats"])
          new_stats[name] = upd["batch_stats"]
        else:
          out[name] = m.apply(v, x, True)
      _, vgg_id, vgg_au = out["vgg"]
      losses = {
          "vgg_id": ce(vgg_id), "vgg_au": mse(vgg_au, aus), "identity": ce(out["identity"][1]),
          "landmarks": mse(out["landmarks"], lm), "expression": mse(out["expression"][1], exp_aus),
          "eyebrow": mse(out["eyebrow"], brows), "eval_au": mse(out["eval_au"], aus),
          "eval_id": ce(out["eval_id"]),
      }
      acc = {"accuracy/identity": jnp.mean(jnp.argmax(out["identity"][1], -1) == cls),
             "accuracy/eval_id": jnp.mean(jnp.argmax(out["eval_id"], -1) == cls)}
      return sum(losses.values()), (losses, acc, new_stats)

    (total, (losses, acc, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"training_loss": total, **{f"loss/{k}": v for k, v in losses.items()}, **acc,
               "l2_grads": optax.tree.norm(grads)}
    return state.replace(step=state.step + 1, params=params, batch_stats=stats,
                         opt_state=opt_state), metrics

  return train_step


def make_meta(config, source) -> dict[str, Any]:
  brows = np.stack([source[i]["brows"] for i in range(len(source))])
  return {"preset": config.data.preset, "seed": int(config.data.get("seed", 0)),
          "identity_bias": float(config.data.identity_bias), "fold": int(config.data.fold),
          "image_size": int(config.data.image_size), "subjects": [int(s) for s in source.subjects],
          "au_names": [f"AU{a}" for a in source.preset.intensity_aus],
          "brow_mean": brows.mean(0).tolist(), "brow_std": (brows.std(0) + 1e-6).tolist(),
          "nets": config.nets.to_dict(), "optim": config.optim.to_dict(),
          "total_steps": int(config.total_steps)}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       stop_at: int | None = None, on_step=None) -> dict[str, Any]:
  """Trains the perception networks; checkpoints and `perception.json` go to `workdir`,
  `quality.json` (`evaluate`) after the last step."""
  mesh = sharding.make_mesh(config.mesh)
  sharding.check_batch_size(config.input.batch_size, mesh)  # Fails before compiling.
  loop.nan_policy(config)
  workdir = workdir_lib.prepare(config, workdir)
  d = config.data
  source = synth_source.SynthFACSSource(
      preset=d.preset, split="train", fold=d.fold, seed=d.get("seed", 0), size=d.image_size,
      frames_per_subject=d.frames_per_subject or None, identity_bias=d.identity_bias)
  meta = make_meta(config, source)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "perception.json"), "w") as f:
      json.dump(meta, f, indent=1)
  modules = build_modules(config.nets, d.image_size, len(meta["subjects"]), len(meta["au_names"]),
                          len(exp_au_names(config.nets, meta["au_names"])))
  tx = make_tx(config.optim, config.total_steps)

  def init_fn(rng):
    params, stats = _split(init_variables(modules, d.image_size, rng))
    return PerceptionState(jnp.zeros((), jnp.int32), params, stats, tx.init(params))

  rng = jax.random.key(config.seed)
  abstract, shardings = sharding.logical_state_shardings(init_fn, mesh, [], rng)
  loader = data_loader.train_loader(source, batch_size=config.input.batch_size, seed=config.seed,
                                 keys=KEYS, worker_count=config.input.workers,
                                 prefetch=config.input.prefetch)
  stage = loop.Stage(
      name="perception", mesh=mesh, init_fn=init_fn, init_rng=rng, step_rng=rng,
      abstract_state=abstract, state_shardings=shardings,
      train_step=make_train_step(modules, meta, tx), loader=loader,
      steps=int(config.total_steps), batch_size=config.input.batch_size)
  out = loop.run(config, workdir, stage, stop_at=stop_at, on_step=on_step)
  quality = {}
  if config.get("evaluate", True) and not out["stopped"]:
    quality = evaluate(load(workdir), config.data, int(config.get("eval_examples", 512)))
    logging.info("Perception networks on unseen faces: %s", metrics_lib.summary(quality, 12))
    writer = writers.MetricWriter(workdir)
    writer.write_scalars(config.total_steps, {f"quality/{k}": v for k, v in quality.items()})
    writer.close()
    if jax.process_index() == 0:
      with open(os.path.join(workdir, "quality.json"), "w") as f:
        json.dump(quality, f, indent=1)
  return {**out, "meta": meta, "quality": quality}


def evaluate(nets: perception.PerceptionNets, data: Any, max_examples: int = 512,
             batch_size: int = 64) -> dict[str, float]:
  """How good the networks are, on faces they were not trained on.

  AU intensity (test split: subjects never seen): ICC(3,1) and MAE of the expression
  network's training head and of `eval_au`, mean over the dataset's intensity AUs (and
  `expression/icc_all_aus` over all 17 when the head regresses them); landmarks: RMSE in px;
  eyebrow: mean Pearson r of the channels that vary and RMSE (canonical units). Identity (held-out frames of the training
  subjects, indices after the training frames): accuracy of `identity` and `eval_id`.
  A network at predict-the-mean has ICC about 0: the stage-1 losses built on it carry
  no AU signal, and `stage1_report`'s expression consistency cannot be measured.
  """
  meta, m, v = nets.meta, nets.modules, nets.variables
  size = int(meta["image_size"])
  frames = int(data.frames_per_subject or 0) or None
  test = synth_source.SynthFACSSource(
      preset=meta["preset"], split="test", fold=meta["fold"], seed=meta["seed"], size=size,
      frames_per_subject=frames, identity_bias=meta["identity_bias"])
  n_test = min(len(test), max_examples)
  pick = np.linspace(0, len(test) - 1, n_test).astype(int)
  x = np.stack([test[int(i)]["image"] for i in pick])
  gt = np.stack([test[int(i)]["au_intensity"] for i in pick])
  lm = np.stack([test[int(i)]["landmarks"] for i in pick])
  brows = np.stack([test[int(i)]["brows"] for i in pick])

  def run(fn, images):
    outs = [np.asarray(fn(jnp.asarray(images[lo:lo + batch_size], jnp.float32) / 255.0))
            for lo in range(0, len(images), batch_size)]
    return np.concatenate(outs)

  out = {"n_test": float(n_test)}
  exp_pred = run(jax.jit(lambda a: m["expression"].apply(v["expression"], a)[1]), x)
  exp_names = exp_au_names(ml_collections.ConfigDict(meta["nets"]), meta["au_names"])
  if exp_names != list(meta["au_names"]):  # Trained on all 17 AUs: also score them all.
    gt_all = np.stack([test[int(i)]["au_all"] for i in pick])
    rep = metrics_lib.intensity_report(exp_pred * 5.0, gt_all, exp_names)
    out["expression/icc_all_aus"] = float(rep["icc/mean"])
    exp_pred = exp_pred[:, [exp_names.index(a) for a in meta["au_names"]]]
  au_preds = {"expression": exp_pred,
              "eval_au": run(jax.jit(lambda a: m["eval_au"].apply(v["eval_au"], a)), x)}
  for name, pred in au_preds.items():
    rep = metrics_lib.intensity_report(pred * 5.0, gt, meta["au_names"])
    out[f"{name}/icc"] = float(rep["icc/mean"])
    out[f"{name}/mae"] = float(rep["mae/mean"])
  out["au/mae_of_train_mean"] = float(np.mean(np.abs(gt - gt.mean(0))))
  pred_lm = run(jax.jit(lambda a: m["landmarks"].apply(v["landmarks"], a)), x).reshape(lm.shape)
  out["landmarks/rmse_px"] = float(np.sqrt(np.mean(np.sum((pred_lm * size - lm) ** 2, -1))))
  pred_b = run(jax.jit(lambda a: m["eyebrow"].apply(v["eyebrow"], a)), x)
  # Channels whose label varies (a set of faces without brow AUs has none: `brows` is the
  # identity-free expression part, 0 at rest); NaN when no channel varies.
  moving = [j for j in range(brows.shape[1]) if np.std(brows[:, j]) > 1e-6]
  out["eyebrow/pearson"] = (float(np.mean([np.corrcoef(pred_b[:, j], brows[:, j])[0, 1]
                                           for j in moving])) if moving else float("nan"))
  b_mean, b_std = np.float32(meta["brow_mean"]), np.float32(meta["brow_std"])
  out["eyebrow/rmse"] = float(np.sqrt(np.mean(np.square(pred_b * b_std + b_mean - brows))))
  # Identity: frames of the training subjects after those the networks were trained on.
  train_frames = frames or presets_lib.get(meta["preset"]).frames_per_subject
  held = 4
  subjects = meta["subjects"]
  items = generate.render_items(
      presets_lib.get(meta["preset"]), meta["seed"], np.repeat(subjects, held),
      np.tile(np.arange(train_frames, train_frames + held), len(subjects)), size=size,
      identity_bias=meta["identity_bias"])
  cls = np.repeat(np.arange(len(subjects)), held)
  for name, fn in (("identity", lambda a: m["identity"].apply(v["identity"], a)[1]),
                   ("eval_id", lambda a: m["eval_id"].apply(v["eval_id"], a))):
    out[f"{name}/accuracy_heldout_frames"] = float(
        np.mean(np.argmax(run(jax.jit(fn), items["image"]), -1) == cls))
  return out
