"""Task losses L_cla of Norface: AU detection (BCE), FER (CE), AU intensity (L2).

Pure jnp functions computed in float32. Masks are 0/1 arrays marking valid
labels (e.g. unannotated AUs); a masked mean divides by the number of valid
entries (at least 1), so a fully masked batch gives 0.
"""

import jax
import jax.numpy as jnp
import numpy as np


def _masked_mean(x: jax.Array, mask: jax.Array | None) -> jax.Array:
  if mask is None:
    return jnp.mean(x)
  mask = jnp.broadcast_to(mask.astype(jnp.float32), x.shape)
  return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def sigmoid_bce(logits: jax.Array, labels: jax.Array,
                mask: jax.Array | None = None,
                pos_weight: jax.Array | None = None) -> jax.Array:
  """Multi-label BCE for AU detection, mean over valid (batch, AU) entries.

  l = -(w_a * y * log s(z) + (1 - y) * log(1 - s(z))), s the sigmoid and w_a an
  optional per-AU positive weight (shape (A,), broadcast over the batch).
  """
  z = logits.astype(jnp.float32)
  y = labels.astype(jnp.float32)
  w = 1.0 if pos_weight is None else jnp.asarray(pos_weight, jnp.float32)
  loss = -(w * y * jax.nn.log_sigmoid(z) + (1.0 - y) * jax.nn.log_sigmoid(-z))
  return _masked_mean(loss, mask)


def soft_ce(logits: jax.Array, probs: jax.Array,
            mask: jax.Array | None = None) -> jax.Array:
  """Soft-target cross entropy (mixup/cutmix): -sum_c q_c log softmax(z)_c.

  Mean over valid batch entries; `mask` has shape (B,).
  """
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return _masked_mean(-jnp.sum(probs.astype(jnp.float32) * logp, axis=-1), mask)


def softmax_ce(logits: jax.Array, labels_int: jax.Array,
               label_smoothing: float = 0.0,
               mask: jax.Array | None = None) -> jax.Array:
  """Softmax cross entropy for FER with integer labels, mean over the batch.

  Label smoothing eps uses targets (1 - eps) * onehot + eps / C.
  """
  c = logits.shape[-1]
  q = jax.nn.one_hot(labels_int, c, dtype=jnp.float32)
  q = q * (1.0 - label_smoothing) + label_smoothing / c
  return soft_ce(logits, q, mask)


def l2_regression(preds: jax.Array, targets: jax.Array,
                  mask: jax.Array | None = None) -> jax.Array:
  """Mean squared error for AU intensity, over valid (batch, AU) entries."""
  diff = preds.astype(jnp.float32) - targets.astype(jnp.float32)
  return _masked_mean(diff * diff, mask)


def balanced_pos_weight(labels: np.ndarray, max_weight: float = 10.0) -> tuple[float, ...]:
  """Per-AU (1 - p) / p from (N, A) occurrence labels (negative entries: unlabelled).

  Weighting the positives by the negatives-to-positives ratio makes each AU's two
  classes cost the same in total, so a rare AU is not learned as "always absent" (which
  scores F1 = 0 at the 0.5 threshold). Clipped to [1, max_weight]; an AU with no
  positive gets max_weight.
  """
  labels = np.asarray(labels, np.float64)
  valid = labels >= 0
  pos = np.sum((labels >= 0.5) & valid, axis=0)
  neg = np.sum((labels < 0.5) & valid, axis=0)
  w = np.where(pos > 0, neg / np.maximum(pos, 1), max_weight)
  return tuple(float(x) for x in np.clip(w, 1.0, max_weight))
