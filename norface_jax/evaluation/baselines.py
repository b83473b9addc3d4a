"""The floor and the probes that every stage-2 number is read against.

A stage-2 result means something only beside what needs no deep model:

- `trivial`: the predictor that ignores the face. AU detection: every AU present (its F1
  is 2p / (1 + p) for an AU of test base rate p), FER: the training set's majority class.
- `linear_probe`: a linear classifier on 32 x 32 grey pixels, standardised per pixel on
  the training set, trained with the stage-2 loss (balanced BCE or cross entropy) and
  AdamW with weight decay as its L2 penalty, minibatches drawn by `seed`.
- `cnn_probe`: a plain CNN (six 3 x 3 convs of 32/64/128 channels, max-pooling, global
  average pooling, one dense layer), the same loss, AdamW 1e-3, batch 32: what a
  small convolutional model learns from the same faces in the same number of steps.

All return the task's headline metric in percent on the test faces (AU detection: mean
F1 over AUs; FER: accuracy). Inputs are uint8 images (N, H, W, 3) and the labels the
stage-2 task trains on (AU 0/1 rows, or emotion ids).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from norface_jax.evaluation import metrics as metrics_lib
from norface_jax.losses import classification as cls_losses

TASKS = ("au_detection", "fer")


def load_faces(data_config, task: str) -> dict[str, np.ndarray]:
  """uint8 faces and labels of a stage-2 data config's splits: `{split}_image`,
  `{split}_oracle` (SynthFACS's true I_n, when `data_config.normalization` is
  "oracle") and `{split}_y` for split in train, test."""
  from norface_jax.data import registry
  _check_task(task)
  key = {"au_detection": "au", "fer": "emotion"}[task]
  out = {}
  for split in ("train", "test"):
    src = registry.make_source(data_config, split, task=task)
    items = [src[i] for i in range(len(src))]
    out[f"{split}_image"] = np.stack([it["image"] for it in items])
    if "image_norm" in items[0]:
      out[f"{split}_oracle"] = np.stack([it["image_norm"] for it in items])
    out[f"{split}_y"] = np.stack([np.asarray(it[key]) for it in items])
  return out


def _check_task(task: str) -> None:
  if task not in TASKS:
    raise ValueError(f"baselines cover {TASKS}, not {task!r}")


def headline(task: str, scores: np.ndarray, labels: np.ndarray) -> float:
  """Mean AU F1 (scores: probabilities or 0/1, threshold 0.5) or accuracy, in percent."""
  _check_task(task)
  if task == "fer":
    return 100.0 * float(np.mean(np.asarray(scores).argmax(-1) == np.asarray(labels)))
  names = list(range(np.asarray(labels).shape[1]))
  return 100.0 * metrics_lib.au_detection_report(scores, labels, names)["f1/mean"]


def trivial(task: str, train_labels: np.ndarray, test_labels: np.ndarray) -> float:
  """All-positive AU F1 or majority-class accuracy on the test labels, in percent."""
  _check_task(task)
  if task == "fer":
    train_labels = np.asarray(train_labels, np.int64)
    majority = np.bincount(train_labels).argmax()
    return 100.0 * float(np.mean(np.asarray(test_labels) == majority))
  test_labels = np.asarray(test_labels, np.float32)
  return headline(task, np.ones_like(test_labels), test_labels)


def pos_weight(train_labels: np.ndarray, max_weight: float = 10.0) -> np.ndarray:
  """The stage-2 trainer's "balanced" rule (`balanced_pos_weight`) as a float32 array."""
  return np.asarray(cls_losses.balanced_pos_weight(train_labels, max_weight), np.float32)


def grey_pixels(images_u8: np.ndarray, size: int = 32) -> np.ndarray:
  """(N, H, W, 3) uint8 -> (N, size * size) float32 grey levels in [0, 1] (box-averaged)."""
  x = np.asarray(images_u8, np.float32).mean(-1) / 255.0
  n, h, w = x.shape
  if h % size or w % size:
    raise ValueError(f"images of {h}x{w} do not reduce to {size}x{size} by whole blocks")
  x = x.reshape(n, size, h // size, size, w // size).mean((2, 4))
  return x.reshape(n, size * size)


def _loss_fn(task: str, weights: np.ndarray | None):
  if task == "fer":
    return lambda logits, y: cls_losses.softmax_ce(logits, y)
  w = jnp.asarray(weights)
  return lambda logits, y: cls_losses.sigmoid_bce(logits, y, pos_weight=w)


def _scores(task: str, logits: np.ndarray) -> np.ndarray:
  return np.asarray(jax.nn.softmax(logits, -1) if task == "fer" else jax.nn.sigmoid(logits))


def _fit(model: nn.Module, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
         task: str, *, seed: int, steps: int, batch_size: int, lr: float,
         weight_decay: float) -> np.ndarray:
  """Trains `model` with AdamW on minibatches drawn by `seed`; test-set logits."""
  weights = None if task == "fer" else pos_weight(y_train)
  loss_of = _loss_fn(task, weights)
  key = jax.random.PRNGKey(seed)
  params = model.init(key, jnp.asarray(x_train[:1]))
  tx = optax.adamw(lr, weight_decay=weight_decay)
  opt = tx.init(params)

  @jax.jit
  def step(params, opt, x, y):
    loss, grads = jax.value_and_grad(lambda p: loss_of(model.apply(p, x), y))(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt, loss

  rng = np.random.default_rng(seed)
  for _ in range(steps):
    idx = rng.integers(0, len(x_train), min(batch_size, len(x_train)))
    params, opt, _ = step(params, opt, x_train[idx], y_train[idx])
  apply = jax.jit(model.apply)
  return np.concatenate([np.asarray(apply(params, x_test[i:i + 512]))
                         for i in range(0, len(x_test), 512)])


class _Linear(nn.Module):
  num_outputs: int

  @nn.compact
  def __call__(self, x):
    return nn.Dense(self.num_outputs, kernel_init=nn.initializers.zeros)(x)


class PlainCNN(nn.Module):
  """Six 3x3 convs (by default 32, 32, 64, 64, 128, 128) with ReLU, 2x2 max-pool after
  each pair, global average pooling and one dense layer."""
  num_outputs: int
  widths: tuple[int, ...] = (32, 64, 128)

  @nn.compact
  def __call__(self, x):
    for c in self.widths:
      x = nn.relu(nn.Conv(c, (3, 3))(x))
      x = nn.relu(nn.Conv(c, (3, 3))(x))
      x = nn.max_pool(x, (2, 2), (2, 2))
    return nn.Dense(self.num_outputs)(x.mean((1, 2)))


def _labels(task: str, y: np.ndarray) -> np.ndarray:
  return np.asarray(y, np.int32) if task == "fer" else np.asarray(y, np.float32)


def _num_outputs(task: str, y_train: np.ndarray, num_classes: int | None) -> int:
  if task == "fer":
    return num_classes or int(np.max(y_train)) + 1
  return y_train.shape[1]


def linear_probe(x_train_u8: np.ndarray, y_train: np.ndarray, x_test_u8: np.ndarray,
                 y_test: np.ndarray, task: str, *, seed: int = 0, steps: int = 2000,
                 batch_size: int = 256, lr: float = 1e-2, weight_decay: float = 0.1,
                 num_classes: int | None = None) -> float:
  """Test metric (percent) of a linear classifier on standardised 32x32 grey pixels."""
  _check_task(task)
  y_train, y_test = _labels(task, y_train), _labels(task, y_test)
  x_tr, x_te = grey_pixels(x_train_u8), grey_pixels(x_test_u8)
  mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-3
  x_tr, x_te = (x_tr - mu) / sd, (x_te - mu) / sd
  model = _Linear(_num_outputs(task, y_train, num_classes))
  logits = _fit(model, x_tr, y_train, x_te, task, seed=seed, steps=steps,
                batch_size=batch_size, lr=lr, weight_decay=weight_decay)
  return headline(task, _scores(task, logits), y_test)


def cnn_probe(x_train_u8: np.ndarray, y_train: np.ndarray, x_test_u8: np.ndarray,
              y_test: np.ndarray, task: str, *, seed: int = 0, steps: int = 1000,
              batch_size: int = 32, lr: float = 1e-3, weight_decay: float = 0.05,
              widths: tuple[int, ...] = (32, 64, 128), num_classes: int | None = None) -> float:
  """Test metric (percent) of `PlainCNN` on per-channel standardised images."""
  _check_task(task)
  y_train, y_test = _labels(task, y_train), _labels(task, y_test)
  x_tr = np.asarray(x_train_u8, np.float32) / 255.0
  x_te = np.asarray(x_test_u8, np.float32) / 255.0
  mu, sd = x_tr.mean((0, 1, 2)), x_tr.std((0, 1, 2)) + 1e-3
  x_tr, x_te = (x_tr - mu) / sd, (x_te - mu) / sd
  model = PlainCNN(_num_outputs(task, y_train, num_classes), tuple(widths))
  logits = _fit(model, x_tr, y_train, x_te, task, seed=seed, steps=steps,
                batch_size=batch_size, lr=lr, weight_decay=weight_decay)
  return headline(task, _scores(task, logits), y_test)
