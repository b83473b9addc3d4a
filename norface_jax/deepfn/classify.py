"""Training LeNet-5 AU classifiers (paper sec. 3.3, 4.3).

Binary cross-entropy over the AUs, Adam (lr 5e-5, betas 0.5, 0.999), a fixed number of
epochs; after each epoch the mean F1 at 0.5 on the validation subjects is computed and
the parameters with the best one are kept (ties keep the earlier epoch). The per-AU
score is DeepFN's mean of F1 and accuracy at 0.5 (`metrics.deepfn_au_score`).
One compiled step and one compiled predict serve every run of a protocol.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from norface_jax.deepfn import lenet as lenet_lib
from norface_jax.evaluation import metrics


@dataclasses.dataclass(frozen=True)
class LeNetTrainer:
  model: lenet_lib.LeNet5
  tx: optax.GradientTransformation
  batch_size: int = 32
  epochs: int = 50
  eval_batch: int = 256


def make_trainer(cfg, num_aus: int) -> LeNetTrainer:
  """From `config.lenet` (batch_size, epochs, lr, b1, b2)."""
  return LeNetTrainer(lenet_lib.LeNet5(num_aus), optax.adam(cfg.lr, b1=cfg.b1, b2=cfg.b2),
                      cfg.batch_size, cfg.epochs)


def bce_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean binary cross-entropy over frames and AUs."""
  return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels.astype(jnp.float32)))


@functools.lru_cache(maxsize=8)
def _step_fn(trainer: LeNetTrainer):
  def step(params, opt_state, x, y):
    loss, grads = jax.value_and_grad(
        lambda p: bce_loss(trainer.model.apply({"params": p}, x), y))(params)
    updates, opt_state = trainer.tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss
  return jax.jit(step, donate_argnums=(0, 1))


@functools.lru_cache(maxsize=8)
def _predict_fn(trainer: LeNetTrainer):
  return jax.jit(lambda p, x: jax.nn.sigmoid(trainer.model.apply({"params": p}, x)))


def predict(trainer: LeNetTrainer, params, images: np.ndarray) -> np.ndarray:
  """Sigmoid probabilities (N, A) of (N, 64, 64, 1) images, in padded fixed-size chunks."""
  fn, b = _predict_fn(trainer), trainer.eval_batch
  out = []
  for i in range(0, len(images), b):
    chunk = np.asarray(images[i:i + b], np.float32)
    n = len(chunk)
    if n < b:
      chunk = np.concatenate([chunk, np.zeros((b - n,) + chunk.shape[1:], np.float32)])
    out.append(np.asarray(fn(params, chunk))[:n])
  return np.concatenate(out) if out else np.zeros((0, trainer.model.num_aus), np.float32)


def mean_f1(probs: np.ndarray, labels: np.ndarray) -> float:
  """Mean over AUs of F1 at 0.5 (the model-selection criterion)."""
  return float(np.nanmean(metrics.f1_per_au(probs, labels)))


def is_better(candidate: float, best: float) -> bool:
  """Strictly better validation F1 (so ties keep the earlier model)."""
  return bool(candidate > best)


def train(trainer: LeNetTrainer, seed: int, train_x: np.ndarray, train_y: np.ndarray,
          val_x: np.ndarray, val_y: np.ndarray) -> tuple[Any, dict[str, Any]]:
  """Trains for `trainer.epochs`; returns (best params, history with 'val_f1', 'best_epoch').

  `seed` sets the initialisation and the batch order. An epoch is ceil(N / batch) steps
  over a fresh permutation (wrapping around so every step has a full batch).
  """
  if len(train_x) == 0 or len(val_x) == 0:
    raise ValueError(f"empty split: {len(train_x)} train, {len(val_x)} validation frames")
  dummy = jnp.zeros((1,) + train_x.shape[1:], jnp.float32)
  params = trainer.model.init(jax.random.PRNGKey(seed), dummy)["params"]
  opt_state = trainer.tx.init(params)
  step = _step_fn(trainer)
  perm_rng = np.random.default_rng([seed, 1])
  n, b = len(train_x), trainer.batch_size
  steps = -(-n // b)
  best, best_params, best_epoch, history, losses = -1.0, None, -1, [], []
  for epoch in range(trainer.epochs):
    order = np.concatenate([perm_rng.permutation(n) for _ in range(-(-steps * b // n))])
    for s in range(steps):
      idx = order[s * b:(s + 1) * b]
      params, opt_state, loss = step(params, opt_state, train_x[idx], train_y[idx])
    losses.append(float(loss))
    f1 = mean_f1(predict(trainer, params, val_x), val_y)
    history.append(f1)
    if is_better(f1, best):
      best, best_epoch = f1, epoch
      best_params = jax.tree.map(lambda a: np.array(a), params)
  return best_params, {"val_f1": history, "best_epoch": best_epoch, "train_loss": losses}


def per_subject_scores(probs: np.ndarray, labels: np.ndarray, subjects: np.ndarray) -> dict:
  """subject -> (mean over AUs of the DeepFN score, per-AU scores (A,))."""
  out = {}
  for s in np.unique(subjects):
    m = subjects == s
    per_au = metrics.deepfn_au_score(probs[m], labels[m])
    out[s.item() if hasattr(s, "item") else s] = (float(np.nanmean(per_au)), per_au)
  return out
