"""Optimizer, learning-rate schedule and train state.

AdamW with a warmup + cosine schedule, gradient clipping, no weight decay on biases,
norms, position embeddings and the class token, and optional layer-wise learning-rate
decay for the ViT (the fine-tuning recipe of MAE/BEiT): block `i` of `L` gets
`layer_decay ** (L - i)` of the learning rate, the patch embedding `layer_decay ** (L+1)`
and everything after the encoder the full rate.
"""

from __future__ import annotations

import re
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

_NO_DECAY = re.compile(r"(bias|scale|pos_embed|cls|cls_token|LayerNorm|norm)")
_BLOCK = re.compile(r"(?:block|blocks|encoderblock|layer)_(\d+)")


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training, as one pytree."""
  step: jax.Array
  params: Any
  opt_state: Any


def _path_str(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def warmup_cosine(base_lr: float, total_steps: int, warmup_steps: int, end_factor: float = 0.0):
  """Linear warmup from 0 to `base_lr`, then cosine to `end_factor * base_lr`."""
  warmup_steps = min(warmup_steps, max(total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=base_lr, warmup_steps=warmup_steps,
      decay_steps=max(total_steps, warmup_steps + 1), end_value=base_lr * end_factor)


def decay_mask(params: Any) -> Any:
  """True where weight decay applies: matrices and kernels, not biases/norms/embeddings."""
  def mask(path, x):
    name = _path_str(path)
    return x.ndim >= 2 and not _NO_DECAY.search(name.split("/")[-1]) and "pos_embed" not in name
  return jax.tree_util.tree_map_with_path(mask, params)


def layer_scales(params: Any, layer_decay: float, num_layers: int,
                 encoder_key: str = "encoder", scanned_key: str = "blocks") -> Any:
  """Per-parameter lr multipliers for layer-wise decay.

  Unscanned blocks (`.../block_3/...`) get a scalar; scanned blocks (a leading layer
  axis under `scanned_key`) get a vector broadcast over that axis.
  """
  def scale(path, x):
    name = _path_str(path)
    if not name.startswith(encoder_key + "/") and f"/{encoder_key}/" not in f"/{name}":
      return jnp.ones((), jnp.float32)
    m = _BLOCK.search(name)
    if m:
      return jnp.asarray(layer_decay ** (num_layers - int(m.group(1))), jnp.float32)
    if f"/{scanned_key}/" in f"/{name}/":
      ids = jnp.arange(x.shape[0], dtype=jnp.float32)
      s = layer_decay ** (num_layers - ids)
      return s.reshape((-1,) + (1,) * (x.ndim - 1))
    if re.search(r"(encoder_norm|final_norm|norm)$|/norm/|encoder_norm", name):
      return jnp.ones((), jnp.float32)
    # Patch embedding, class token, position embedding: below the first block.
    return jnp.asarray(layer_decay ** (num_layers + 1), jnp.float32)
  return jax.tree_util.tree_map_with_path(scale, params)


def scale_by_tree(scales: Any) -> optax.GradientTransformation:
  """Multiplies each update by a fixed, broadcastable per-parameter factor."""
  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    del params
    return jax.tree.map(lambda u, s: u * s.astype(u.dtype), updates, scales), state

  return optax.GradientTransformation(init_fn, update_fn)


def make_schedule(optim_config: Any, total_steps: int, lr: float | None = None):
  """`schedule="cosine"` (default): linear warm-up then cosine to `end_lr_factor * lr`;
  `"constant"`: linear warm-up from 0 over `warmup_steps`, then `lr`."""
  c = optim_config
  lr = float(c.lr if lr is None else lr)
  warmup = int(c.get("warmup_steps", 0))
  kind = c.get("schedule", "cosine")
  if kind == "cosine":
    return warmup_cosine(lr, total_steps, warmup, c.get("end_lr_factor", 0.0))
  if kind == "constant":
    return optax.linear_schedule(0.0, lr, warmup) if warmup else optax.constant_schedule(lr)
  raise ValueError(f"config.optim.schedule={kind!r}: expected 'cosine' or 'constant'")


def make_optimizer(optim_config: Any, total_steps: int, params: Any | None = None,
                   num_layers: int = 0, *, lr: float | None = None,
                   b1: float | None = None) -> tuple[optax.GradientTransformation, Any]:
  """Builds `(tx, schedule)` from `config.optim`: the one optimizer builder of every stage.

  `name`: adamw (decoupled weight decay, masked), adam or sgd; `schedule`: cosine or
  constant (`make_schedule`); `grad_clip` > 0 clips the global norm; `layer_decay`
  scales the encoder blocks' rates. `lr` and `b1` override the config's (stage 1's
  discriminator). `params` (unboxed, abstract is fine) is needed only for layer decay.
  """
  c = optim_config
  schedule = make_schedule(c, total_steps, lr)
  b1 = c.get("b1", 0.9) if b1 is None else b1
  parts = []
  if c.get("grad_clip", 0.0):
    parts.append(optax.clip_by_global_norm(c.grad_clip))
  name = c.get("name", "adamw")
  if name == "adamw":
    parts.append(optax.scale_by_adam(b1=b1, b2=c.b2, eps=c.get("eps", 1e-8)))
    if c.get("weight_decay", 0.0):
      parts.append(optax.add_decayed_weights(c.weight_decay, mask=decay_mask))
  elif name == "adam":  # Plain Adam (stage 1 uses beta1 = 0).
    parts.append(optax.scale_by_adam(b1=b1, b2=c.b2, eps=c.get("eps", 1e-8)))
  elif name == "sgd":
    parts.append(optax.trace(decay=c.get("momentum", 0.9)))
  else:
    raise ValueError(f"config.optim.name={name!r}: expected adamw, adam or sgd")
  layer_decay = c.get("layer_decay", 0.0)
  if layer_decay and layer_decay != 1.0:
    if params is None or num_layers <= 0:
      raise ValueError("config.optim.layer_decay needs the parameters and the encoder depth")
    parts.append(scale_by_tree(layer_scales(params, layer_decay, num_layers)))
  parts.append(optax.scale_by_learning_rate(schedule))
  return optax.chain(*parts), schedule
