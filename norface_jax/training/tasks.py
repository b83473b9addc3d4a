"""The three stage-2 tasks: which label, which loss, which head activation, which report.

AU detection: sigmoid + binary cross entropy, F1 per AU. AU intensity: L2 regression,
ICC(3,1)/MSE/MAE per AU. FER: softmax + cross entropy, accuracy and confusion matrix.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from norface_jax.evaluation import metrics as metrics_lib
from norface_jax.losses import classification as cls_losses


@dataclasses.dataclass(frozen=True)
class Task:
  name: str                      # fer | au_detection | au_intensity
  label_names: tuple[str, ...]   # AU names ("AU1", ...) or emotion names.
  # AU detection: per-AU weight of the positive term of the BCE (None: 1), e.g. from
  # `losses.classification.balanced_pos_weight` of the training labels.
  pos_weight: tuple[float, ...] | None = None

  @property
  def label_key(self) -> str:
    return {"fer": "emotion", "au_detection": "au", "au_intensity": "au_intensity"}[self.name]

  @property
  def num_outputs(self) -> int:
    return len(self.label_names)

  def soft_targets(self, labels: jax.Array) -> jax.Array:
    """Float targets that mixup/cutmix can blend (one-hot for FER)."""
    if self.name == "fer":
      return jax.nn.one_hot(labels, self.num_outputs, dtype=jnp.float32)
    return labels.astype(jnp.float32)

  def loss(self, outputs: jax.Array, targets: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
    """L_cla on float targets from `soft_targets` (possibly mixed)."""
    outputs = outputs.astype(jnp.float32)
    if self.name == "fer":
      if label_smoothing:
        targets = targets * (1.0 - label_smoothing) + label_smoothing / self.num_outputs
      return cls_losses.soft_ce(outputs, targets)
    if self.name == "au_detection":
      pos_weight = None if self.pos_weight is None else jnp.asarray(self.pos_weight, jnp.float32)
      return cls_losses.sigmoid_bce(outputs, targets, pos_weight=pos_weight)
    return cls_losses.l2_regression(outputs, targets)

  def predict(self, outputs: jax.Array) -> jax.Array:
    """What evaluation and `launch/predict.py` report: probabilities or intensities."""
    outputs = outputs.astype(jnp.float32)
    if self.name == "fer":
      return jax.nn.softmax(outputs, axis=-1)
    if self.name == "au_detection":
      return jax.nn.sigmoid(outputs)
    return outputs

  def report(self, preds: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Metrics on the whole evaluation set (host side)."""
    if self.name == "fer":
      return metrics_lib.fer_report(preds, labels, list(self.label_names))
    if self.name == "au_detection":
      return metrics_lib.au_detection_report(preds, labels, list(self.label_names))
    return metrics_lib.intensity_report(preds, labels, list(self.label_names))

  def positive_labels(self, labels: np.ndarray) -> np.ndarray:
    """Multi-hot (N, L) 'sample is positive for label l', for the router heatmap."""
    if self.name == "fer":
      return np.eye(self.num_outputs, dtype=np.float32)[labels.astype(int)]
    if self.name == "au_detection":
      return (labels >= 0.5).astype(np.float32)
    return (labels >= 1.0).astype(np.float32)
