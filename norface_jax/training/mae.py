"""MAE pre-training of the ViT encoder (E_s / E_f) on face crops: SynthFACS or a folder.

What is MAE's own: the model, the pure `train_step` (augmentation, random masking, the
loss on masked patches), the eval hook (held-out reconstruction loss and a masked |
reconstructed | original picture) and `build`; the one loop (`training/loop.py`) runs
them. The
params' `encoder` subtree is the project ViT: stage 2 initialises from it with
`config.init_from=<workdir>/checkpoints`, `config.init_from_key='encoder'`.
"""

from __future__ import annotations

import copy
import dataclasses
import glob
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from norface_jax.data import augment as augment_lib
from norface_jax.data import images as images_lib
from norface_jax.data import loader as data_loader
from norface_jax.data import registry
from norface_jax.data.images import IMAGE_MEAN, IMAGE_STD, load_image
from norface_jax.evaluation import plots
from norface_jax.models import mae as mae_lib
from norface_jax.models import vit as vit_lib
from norface_jax.training import checkpointing
from norface_jax.training import loop
from norface_jax.training import optim
from norface_jax.training import sharding
from norface_jax.training import workdir as workdir_lib
_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")


class ImageFolderSource:
  """Every image under `root` (sorted), resized to `size`; every 20th file is `test`."""

  def __init__(self, root: str, split: str, size: int):
    root = os.path.expanduser(root)
    files = sorted(f for f in glob.glob(os.path.join(root, "**", "*"), recursive=True)
                   if f.lower().endswith(_EXTENSIONS))
    if not files:
      raise FileNotFoundError(f"config.data.folder={root!r}: no {_EXTENSIONS} images there")
    test = split == "test"
    self.files = [f for i, f in enumerate(files) if (i % 20 == 19) == test] or files[:1]
    self.size = size

  def __len__(self) -> int:
    return len(self.files)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return {"image": load_image(self.files[index], self.size)}


def make_source(config: ml_collections.ConfigDict, split: str) -> Any:
  if config.data.folder:
    return ImageFolderSource(config.data.folder, split, config.data.image_size)
  task = "fer" if registry.spec(config.data.dataset, config.data).fer else "au_detection"
  return registry.make_source(config.data, split, task=task)


def make_model(config: ml_collections.ConfigDict) -> mae_lib.MAE:
  m = config.model
  return mae_lib.MAE(encoder=m.encoder, decoder_width=m.decoder_width,
                     decoder_depth=m.decoder_depth, decoder_heads=m.decoder_heads,
                     mask_ratio=m.mask_ratio, dtype=jnp.dtype(config.dtype),
                     remat=m.remat, scan=m.scan, attention=m.get("attention", "auto"),
                     remat_policy=m.get("remat_policy", ""))


def effective_lr(config: ml_collections.ConfigDict) -> float:
  """MAE's linear scaling: lr = base_lr * global batch / 256."""
  return config.optim.base_lr * config.input.batch_size / 256


def losses(model, config, params, x, rngs, train: bool):
  """(mean loss over masked patches, per-example losses (B,), model outputs)."""
  p = vit_lib.decode_variant(config.model.encoder)["patch_size"]
  out = model.apply({"params": params}, x, train=train, rngs=rngs)
  target = mae_lib.patch_targets(x, p, config.model.norm_pix_loss)
  per_patch = jnp.mean((out["pred"] - target) ** 2, axis=-1)
  per_example = jnp.sum(per_patch * out["mask"], 1) / jnp.maximum(jnp.sum(out["mask"], 1), 1.0)
  return mae_lib.reconstruction_loss(out["pred"], target, out["mask"]), per_example, out


def augment(rng: jax.Array, x: jax.Array, aug: dict[str, Any]) -> jax.Array:
  """MAE's pre-training augmentation: random resized crop and horizontal flip."""
  k_crop, k_flip = jax.random.split(rng)
  if aug.get("crop_scale"):
    x = augment_lib.random_resized_crop(k_crop, x, tuple(aug["crop_scale"]))
  if aug.get("flip"):
    x = augment_lib.random_flip(k_flip, x)
  return x


def make_train_step(model, config, tx):
  dtype = jnp.dtype(config.dtype)
  aug = dict(config.augment)

  def train_step(state: optim.TrainState, batch: dict[str, jax.Array], rng: jax.Array):
    aug_rng, mask_rng, dropout_rng = jax.random.split(jax.random.fold_in(rng, state.step), 3)
    x = augment(aug_rng, batch["image"].astype(jnp.float32) / 255.0, aug)
    x = ((x - IMAGE_MEAN) / IMAGE_STD).astype(dtype)

    def loss_fn(params):
      loss, _, _ = losses(model, config, params, x, {"mask": mask_rng, "dropout": dropout_rng},
                          train=True)
      return loss

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, {"training_loss": loss, "loss/reconstruction": loss,
                       "l2_grads": optax.tree.norm(grads), "l2_params": optax.tree.norm(params),
                       "l2_updates": optax.tree.norm(updates)}

  return train_step


def make_eval_step(model, config):
  """Held-out loss with a fixed mask per batch, plus what the picture needs."""
  dtype = jnp.dtype(config.dtype)
  p = vit_lib.decode_variant(config.model.encoder)["patch_size"]

  def eval_step(params, batch):
    x = images_lib.standardize(batch["image"], dtype)
    _, per_example, out = losses(model, config, params, x, {"mask": jax.random.key(0)},
                                 train=False)
    target = mae_lib.patchify(x.astype(jnp.float32), p)
    pred = out["pred"]
    if config.model.norm_pix_loss:  # Back to pixels with each patch's own statistics.
      mean = target.mean(-1, keepdims=True)
      std = jnp.sqrt(target.var(-1, keepdims=True, ddof=1) + 1e-6)
      pred = pred * std + mean
    return {"loss": per_example, "pred": pred, "mask": out["mask"], "image": batch["image"],
            "valid": batch.get("_valid", jnp.ones(x.shape[:1], jnp.float32))}

  return eval_step


def reconstruction_grid(images_u8: np.ndarray, pred: np.ndarray, mask: np.ndarray,
                        patch: int, num: int = 8) -> np.ndarray:
  """uint8 grid, rows masked | reconstructed (+ visible patches) | original."""
  images = images_u8[:num].astype(np.float32) / 255.0
  b, h, w, c = images.shape
  grid_hw = (h // patch, w // patch)
  m = np.repeat(mask[:num, :, None], patch * patch * c, axis=-1)
  m = np.asarray(mae_lib.unpatchify(jnp.asarray(m), patch, grid_hw, c))
  recon = np.asarray(mae_lib.unpatchify(jnp.asarray(pred[:num]), patch, grid_hw, c))
  recon = np.clip(recon * IMAGE_STD + IMAGE_MEAN, 0.0, 1.0)
  masked = images * (1 - m) + 0.5 * m
  pasted = images * (1 - m) + recon * m
  return plots.image_grid([masked, pasted, images], ["masked", "reconstructed", "original"])


@dataclasses.dataclass
class Setup:
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


def build(config: ml_collections.ConfigDict, num_train_examples: int = 1) -> Setup:
  """Mesh, model, optimizer and the abstract sharded state (nothing allocated)."""
  mesh = sharding.make_mesh(config.mesh)
  sharding.check_batch_size(config.input.batch_size, mesh)
  rules = sharding.mesh_rules(config.logical_axis_rules, mesh)
  steps = loop.total_steps(config, num_train_examples)
  model = make_model(config)
  init_rng, step_rng = jax.random.split(jax.random.key(config.seed))
  optim_config = copy.deepcopy(config.optim)
  optim_config.unlock()
  optim_config.lr = effective_lr(config)
  if optim_config.warmup_steps <= 0:
    optim_config.warmup_steps = int(config.warmup_epochs * num_train_examples
                                    // config.input.batch_size)
  tx, schedule = optim.make_optimizer(optim_config, steps)
  size = config.data.image_size

  def init_fn(r):
    params_rng, mask_rng = jax.random.split(r)
    x = jnp.zeros((1, size, size, 3), jnp.dtype(config.dtype))
    params = model.init({"params": params_rng, "mask": mask_rng}, x, train=False)["params"]
    return optim.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                            opt_state=tx.init(params))

  abstract_state, shardings = sharding.logical_state_shardings(init_fn, mesh, rules, init_rng)
  return Setup(model, mesh, tx, schedule, init_fn, init_rng, step_rng, abstract_state,
               shardings, steps)


def evaluate(eval_fn, params, source, config, mesh) -> tuple[float, dict[str, np.ndarray]]:
  """Mean held-out loss over up to `config.eval.max_examples`; the first batch for the
  picture. The eval step's outputs are replicated global arrays, so the validity mask
  is taken from them (every process sees every process's rows)."""
  total, seen, first = 0.0, 0, None
  # The first `max_examples` items, split over the processes (not each process's first).
  for batch in data_loader.eval_batches(source, batch_size=config.input.eval_batch_size,
                                        keys=("image",),
                                        max_examples=config.eval.get("max_examples", 0)):
    out = jax.device_get(eval_fn(params, sharding.host_to_global(batch, mesh)))
    valid = np.asarray(out["valid"]).astype(bool)
    if first is None:
      first = {"image": np.asarray(out["image"]), "pred": out["pred"], "mask": out["mask"]}
    total += float(out["loss"][valid].sum())
    seen += int(valid.sum())
  return total / max(seen, 1), first


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       stop_at: int | None = None, on_step=None) -> dict[str, Any]:
  """MAE pre-training per `config` into `workdir` (resumable through the loop)."""
  sharding.check_batch_size(config.input.batch_size, sharding.make_mesh(config.mesh))
  loop.nan_policy(config)
  workdir = workdir_lib.prepare(config, workdir)
  train_source = make_source(config, "train")
  eval_source = make_source(config, "test")
  setup = build(config, len(train_source))
  mesh, steps = setup.mesh, setup.steps
  logging.info("MAE: %d train / %d held-out images; %d steps of batch %d (lr %.3g) on %s.",
               len(train_source), len(eval_source), steps, config.input.batch_size,
               effective_lr(config), dict(mesh.shape))
  loader = data_loader.train_loader(train_source, batch_size=config.input.batch_size, seed=config.seed,
                                 keys=("image",), worker_count=config.input.workers,
                                 prefetch=config.input.prefetch)
  repl = sharding.replicated(mesh)
  eval_fn = jax.jit(make_eval_step(setup.model, config),
                    in_shardings=(setup.state_shardings.params, sharding.batch_sharding(mesh)),
                    out_shardings=repl)
  patch = vit_lib.decode_variant(config.model.encoder)["patch_size"]
  last = {}

  def evaluate_hook(state, step, writer):
    eval_loss, first = evaluate(eval_fn, state.params, eval_source, config, mesh)
    grid = reconstruction_grid(first["image"], first["pred"], first["mask"], patch,
                               config.eval.num_images)
    writer.write_images(step, {"mae/masked_reconstructed_original": grid})
    if jax.process_index() == 0:
      from PIL import Image
      Image.fromarray(grid).save(os.path.join(workdir, "mae_reconstruction.png"))
    last["eval_loss"] = eval_loss
    return {"loss": eval_loss}

  after_init = checkpointing.init_from_hook(config)
  stage = loop.Stage(
      name="mae", mesh=mesh, init_fn=setup.init_fn, init_rng=setup.init_rng,
      step_rng=setup.step_rng, abstract_state=setup.abstract_state,
      state_shardings=setup.state_shardings,
      train_step=make_train_step(setup.model, config, setup.tx), loader=loader, steps=steps,
      batch_size=config.input.batch_size, schedule=setup.schedule, evaluate=evaluate_hook,
      after_init=after_init)
  out = loop.run(config, workdir, stage, stop_at=stop_at, on_step=on_step)
  return {**out, "eval_loss": last.get("eval_loss")}
