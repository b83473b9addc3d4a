"""Orbax checkpoints: the train state and the Grain iterator, saved together.

Two managers live under the workdir:
- `checkpoints/`: every `checkpoint_every` steps (async), keeps the last few; holds
  `Composite(state=..., data_iter=...)` so a resumed run continues with the same
  parameters *and* the same next batch (exact resume).
- `best/`: the state with the best evaluation metric so far (mode max/min), keeping one.
"""

from __future__ import annotations

import logging as std_logging
import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging

# Orbax writes a replicated array in slices, one per replica ("replica-parallel"), and
# cuts each slice with an eager `jax.lax.slice_in_dim`: one XLA compile per array shape
# and process (on 8 CPU devices, ~150 compiles for a small model's first save). Only
# arrays whose per-replica slice reaches this size are split; smaller ones are written
# whole by one replica, which is faster for them anyway.
MIN_REPLICA_SLICE_BYTES = 4 << 20


def _register_array_handler() -> None:
  quiet = logging.get_absl_logger()  # Orbax warns on every override it is asked for.
  level = quiet.level
  quiet.setLevel(std_logging.ERROR)
  try:
    ocp.type_handlers.register_type_handler(
        jax.Array, ocp.type_handlers.ArrayHandler(
            min_slice_bytes_for_replica_parallel=MIN_REPLICA_SLICE_BYTES), override=True)
  finally:
    quiet.setLevel(level)


_register_array_handler()


class Checkpointer:
  """Latest + best checkpoints of one run."""

  def __init__(self, workdir: str, *, keep: int = 2, async_save: bool = True,
               best_metric: str | None = None, best_mode: str = "max"):
    workdir = os.path.abspath(workdir)
    self.latest = ocp.CheckpointManager(
        os.path.join(workdir, "checkpoints"),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=async_save, create=True),
    )
    self.best = None
    self.best_metric = best_metric
    if best_metric:
      if best_mode not in ("max", "min"):
        raise ValueError(f"config.eval.best_mode must be 'max' or 'min', got {best_mode!r}")
      self.best = ocp.CheckpointManager(
          os.path.join(workdir, "best"),
          options=ocp.CheckpointManagerOptions(
              max_to_keep=1, best_fn=lambda m: m[best_metric], best_mode=best_mode,
              enable_async_checkpointing=False, create=True),
      )

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def save(self, step: int, state: Any, data_iter: Any | None = None, *, force: bool = False) -> bool:
    items = {"state": ocp.args.StandardSave(state)}
    if data_iter is not None:
      items["data_iter"] = grain.checkpoint.CheckpointSave(data_iter)
    saved = self.latest.save(step, args=ocp.args.Composite(**items), force=force)
    if saved:
      logging.debug("Saving checkpoint at step %d (async).", step)
    return saved

  def restore(self, abstract_state: Any, data_iter: Any | None = None,
              step: int | None = None) -> tuple[Any, int]:
    """Restores into `abstract_state`'s shapes/shardings (and `data_iter` in place)."""
    step = self.latest.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.latest.directory}")
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iter is not None:
      items["data_iter"] = grain.checkpoint.CheckpointRestore(data_iter)
    restored = self.latest.restore(step, args=ocp.args.Composite(**items))
    logging.info("Restored checkpoint of step %d from %s.", step, self.latest.directory)
    return restored["state"], step

  def save_best(self, step: int, state: Any, metrics: dict[str, float]) -> None:
    if self.best is None:
      return
    if self.best_metric not in metrics:
      raise KeyError(f"best metric {self.best_metric!r} not among evaluation metrics "
                     f"{sorted(metrics)}; set config.eval.best_metric")
    self.best.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)),
                   metrics={k: float(v) for k, v in metrics.items()}, force=True)

  def wait(self) -> None:
    self.latest.wait_until_finished()
    if self.best is not None:
      self.best.wait_until_finished()

  def close(self) -> None:
    self.wait()
    self.latest.close()
    if self.best is not None:
      self.best.close()


def abstract_like(state: Any) -> Any:
  """ShapeDtypeStructs (with shardings) of a concrete state, for restoring into it."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, state)


def saved_step(directory: str) -> int | None:
  """The latest step saved in a checkpoint directory (None: none), read from its names."""
  manager = ocp.CheckpointManager(os.path.abspath(directory))
  step = manager.latest_step()
  manager.close()
  return step


def restore_state_only(directory: str, abstract_state: Any, step: int | None = None) -> tuple[Any, int]:
  """Reads the `state` item of a checkpoint directory (`<workdir>/checkpoints` or `best`)."""
  manager = ocp.CheckpointManager(os.path.abspath(directory))
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {directory}")
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state)))
  manager.close()
  return restored["state"], step


def graft_params(params: Any, path: str, key: str) -> Any:
  """`params` with its `key` subtree taken from a checkpoint (e.g. a pre-trained encoder).

  `path`: a checkpoint directory (`<workdir>/checkpoints`); its state's `params` (or the
  state itself) must hold `key` with every leaf `params[key]` has, at the same shapes.
  Leaves the model has no place for are named in a warning and ignored.
  """
  import numpy as np
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
  dst = params[key]
  flat_src = dict(jax.tree_util.tree_flatten_with_path(src[key])[0])
  flat_dst, _ = jax.tree_util.tree_flatten_with_path(dst)
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
  out = dict(params)
  out[key] = jax.tree_util.tree_unflatten(jax.tree.structure(dst), new_leaves)
  logging.info("Initialised params[%r] from %s (step %d).", key, path, step)
  return out


def is_full_size(config: Any) -> bool:
  """A ViT-B-sized or larger encoder (the papers' sizes), not a CPU/test one."""
  from norface_jax.models import vit as vit_lib
  return vit_lib.decode_variant(config.model.encoder)["width"] >= 768


def init_from_hook(config: Any, field: str = "params", *, pretrained_encoder: bool = False):
  """The loop's `after_init` for `config.init_from`: grafts `config.init_from_key` of that
  checkpoint into the fresh state's `field` (None without `init_from`).

  `pretrained_encoder`: the method starts this stage from an MAE encoder (stages 1 and
  2); a full-size encoder (ViT-B or larger) without `init_from` gets a loud warning
  here, before anything compiles.
  """
  if not config.get("init_from"):
    if pretrained_encoder and is_full_size(config):
      logging.warning(
          "%s\n  config.init_from is empty: the %s encoder starts from RANDOM weights.\n"
          "  The paper starts it from an MAE checkpoint (launch/train.py --config="
          "configs/mae_pretrain.py, then --config.init_from=<mae workdir>/checkpoints);\n"
          "  a random start is only table 8's 'random init' ablation.\n%s",
          "!" * 78, config.model.encoder, "!" * 78)
    return None
  return lambda state: state.replace(**{field: graft_params(
      getattr(state, field), config.init_from, config.init_from_key)})
