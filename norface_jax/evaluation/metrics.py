"""Evaluation metrics for AU detection, AU intensity and FER (host-side NumPy).

Pure functions over whole test-set arrays: the trainer gathers predictions on
the host, then calls these once. Definitions follow `FACS.md`:

- AU detection: F1 = 2PR / (P + R) from TP, FP, FN over the whole set at a
  threshold (0.5), per AU, and the unweighted mean over AUs.
- AU intensity: ICC(3,1) (Shrout & Fleiss, two-way mixed, consistency, single
  rater) between prediction and label, MSE and MAE, per AU and the mean.
- FER: overall accuracy, per-class accuracy (recall), mean class accuracy and the
  confusion matrix (rows true class, columns predicted class).
- DeepFN: per AU the mean of F1 and accuracy at 0.5.

Shape letters: N samples (frames), A action units, C classes.

Masks: an optional (N, A) array where 0 marks an unknown label (e.g. BP4D's 9);
those entries are left out of that AU's counts. An AU with no valid entry gets
NaN, and every '.../mean' is the mean over the AUs (classes) that are not NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _as_2d(x, name: str) -> np.ndarray:
  x = np.asarray(x)
  if x.ndim == 1:
    x = x[:, None]
  if x.ndim != 2:
    raise ValueError(f"{name} must be (N, A) or (N,), got shape {x.shape}")
  return x


def _check_mask(mask, shape: tuple[int, ...]) -> np.ndarray:
  if mask is None:
    return np.ones(shape, dtype=bool)
  mask = _as_2d(mask, "mask")
  if mask.shape != shape:
    raise ValueError(f"mask shape {mask.shape} != labels shape {shape}")
  return mask.astype(bool)


def _au_key(name) -> str:
  """'AU12' for 12 or '12'; other strings are kept as they are."""
  if isinstance(name, (int, np.integer)) or (isinstance(name, str) and name.isdigit()):
    return f"AU{int(name)}"
  return str(name)


def _nanmean(x: np.ndarray) -> float:
  x = np.asarray(x, dtype=np.float64)
  ok = ~np.isnan(x)
  return float(x[ok].mean()) if ok.any() else float("nan")


def detection_counts(probs_or_preds, labels, threshold: float = 0.5,
                     mask=None) -> dict[str, np.ndarray]:
  """Per-AU TP, FP, FN, TN (each (A,) int) over the valid entries.

  A prediction is positive when `probs_or_preds >= threshold` (so binary 0/1
  predictions work unchanged); a label is positive when it is > 0.5.
  """
  labels = _as_2d(labels, "labels")
  scores = _as_2d(probs_or_preds, "probs_or_preds")
  if scores.shape != labels.shape:
    raise ValueError(f"predictions {scores.shape} and labels {labels.shape} differ")
  valid = _check_mask(mask, labels.shape)
  pred = (scores >= threshold) & valid
  true = (labels > 0.5) & valid
  tp = np.sum(pred & true, axis=0)
  fp = np.sum(pred & ~true, axis=0)
  fn = np.sum(~pred & true, axis=0)
  tn = np.sum(valid, axis=0) - tp - fp - fn
  return {"tp": tp, "fp": fp, "fn": fn, "tn": tn}


def f1_per_au(probs_or_preds, labels, threshold: float = 0.5, mask=None) -> np.ndarray:
  """F1 per AU, (A,) float64.

  F1 = 2PR/(P+R) = 2TP / (2TP + FP + FN). Defined as 0 when TP = 0 (including an
  AU with no positive label and no positive prediction): the same as
  `sklearn.metrics.f1_score(..., zero_division=0)`. NaN for an AU whose entries
  are all masked out.
  """
  c = detection_counts(probs_or_preds, labels, threshold, mask)
  tp, fp, fn, tn = (c[k].astype(np.float64) for k in ("tp", "fp", "fn", "tn"))
  denom = 2 * tp + fp + fn
  f1 = np.where(tp > 0, 2 * tp / np.maximum(denom, 1), 0.0)
  return np.where(tp + fp + fn + tn > 0, f1, np.nan)


def accuracy_per_au(probs_or_preds, labels, threshold: float = 0.5,
                    mask=None) -> np.ndarray:
  """Fraction of valid entries predicted correctly, per AU, (A,) float64 (NaN if none valid)."""
  c = detection_counts(probs_or_preds, labels, threshold, mask)
  n = (c["tp"] + c["fp"] + c["fn"] + c["tn"]).astype(np.float64)
  return np.where(n > 0, (c["tp"] + c["tn"]) / np.maximum(n, 1), np.nan)


def deepfn_au_score(probs_or_preds, labels, threshold: float = 0.5,
                    mask=None) -> np.ndarray:
  """DeepFN's per-AU score: mean of F1 and accuracy at the threshold, (A,)."""
  return 0.5 * (f1_per_au(probs_or_preds, labels, threshold, mask)
                + accuracy_per_au(probs_or_preds, labels, threshold, mask))


def au_detection_report(probs, labels, au_names: Sequence, mask=None,
                        threshold: float = 0.5) -> dict[str, float]:
  """Per-AU and mean F1, accuracy and DeepFN score.

  Keys: 'f1/AU1', ..., 'f1/mean', 'acc/AU1', ..., 'acc/mean', 'deepfn/AU1', ...,
  'deepfn/mean' (AU names: ints or digit strings become 'AU<n>', other strings
  are kept).
  """
  labels = _as_2d(labels, "labels")
  if len(au_names) != labels.shape[1]:
    raise ValueError(f"{len(au_names)} AU names for {labels.shape[1]} label columns")
  values = {
      "f1": f1_per_au(probs, labels, threshold, mask),
      "acc": accuracy_per_au(probs, labels, threshold, mask),
  }
  values["deepfn"] = 0.5 * (values["f1"] + values["acc"])
  out: dict[str, float] = {}
  for metric, per_au in values.items():
    for name, v in zip(au_names, per_au):
      out[f"{metric}/{_au_key(name)}"] = float(v)
    out[f"{metric}/mean"] = _nanmean(per_au)
  return out


def icc31(preds, labels) -> float:
  """ICC(3,1) between two raters (prediction, label) over n frames.

  Shrout & Fleiss two-way mixed, consistency, single rater, with Y the n x k
  (k = 2) matrix, grand mean G, row means r_i, column means c_j:
  SS_R = k sum_i (r_i - G)^2, SS_C = n sum_j (c_j - G)^2, SS_T = sum_ij (y_ij - G)^2,
  MS_R = SS_R / (n-1), MS_E = (SS_T - SS_R - SS_C) / ((n-1)(k-1)),
  ICC = (MS_R - MS_E) / (MS_R + (k-1) MS_E).
  NaN when n < 2 or the denominator is 0 (e.g. both raters constant).
  """
  preds = np.asarray(preds, dtype=np.float64).reshape(-1)
  labels = np.asarray(labels, dtype=np.float64).reshape(-1)
  if preds.shape != labels.shape:
    raise ValueError(f"preds {preds.shape} and labels {labels.shape} differ")
  y = np.stack([preds, labels], axis=1)
  n, k = y.shape
  if n < 2:
    return float("nan")
  grand = y.mean()
  ss_r = k * np.sum((y.mean(axis=1) - grand) ** 2)
  ss_c = n * np.sum((y.mean(axis=0) - grand) ** 2)
  ss_t = np.sum((y - grand) ** 2)
  ms_r = ss_r / (n - 1)
  ms_e = (ss_t - ss_r - ss_c) / ((n - 1) * (k - 1))
  denom = ms_r + (k - 1) * ms_e
  if denom <= 0:
    return float("nan")
  return float((ms_r - ms_e) / denom)


def intensity_report(preds, labels, au_names: Sequence, mask=None) -> dict[str, float]:
  """Per-AU and mean ICC(3,1), MSE and MAE over the valid frames.

  Keys: 'icc/AU6', ..., 'icc/mean', 'mse/AU6', ..., 'mse/mean', 'mae/AU6', ...,
  'mae/mean'.
  """
  labels = _as_2d(labels, "labels").astype(np.float64)
  preds = _as_2d(preds, "preds").astype(np.float64)
  if preds.shape != labels.shape:
    raise ValueError(f"preds {preds.shape} and labels {labels.shape} differ")
  if len(au_names) != labels.shape[1]:
    raise ValueError(f"{len(au_names)} AU names for {labels.shape[1]} label columns")
  valid = _check_mask(mask, labels.shape)
  per = {"icc": [], "mse": [], "mae": []}
  for a in range(labels.shape[1]):
    p, t = preds[valid[:, a], a], labels[valid[:, a], a]
    per["icc"].append(icc31(p, t))
    err = p - t
    per["mse"].append(float(np.mean(err ** 2)) if err.size else float("nan"))
    per["mae"].append(float(np.mean(np.abs(err))) if err.size else float("nan"))
  out: dict[str, float] = {}
  for metric, values in per.items():
    for name, v in zip(au_names, values):
      out[f"{metric}/{_au_key(name)}"] = float(v)
    out[f"{metric}/mean"] = _nanmean(np.array(values))
  return out


def confusion_matrix(preds, labels, num_classes: int) -> np.ndarray:
  """(C, C) int64 counts, rows = true class, columns = predicted class."""
  preds = np.asarray(preds).reshape(-1).astype(np.int64)
  labels = np.asarray(labels).reshape(-1).astype(np.int64)
  if preds.shape != labels.shape:
    raise ValueError(f"preds {preds.shape} and labels {labels.shape} differ")
  for name, v in (("preds", preds), ("labels", labels)):
    if v.size and (v.min() < 0 or v.max() >= num_classes):
      raise ValueError(f"{name} outside 0..{num_classes - 1}")
  cm = np.zeros((num_classes, num_classes), dtype=np.int64)
  np.add.at(cm, (labels, preds), 1)
  return cm


def fer_report(logits_or_probs, labels, class_names: Sequence[str]) -> dict:
  """FER accuracy, per-class accuracy (recall), mean class accuracy, confusion.

  `logits_or_probs` is (N, C) (argmax is the prediction) or (N,) class ids;
  `labels` is (N,) class ids or (N, C) one-hot / soft (argmax taken).
  Keys: 'accuracy', 'mean_class_accuracy' (over classes present in `labels`),
  'class_acc/<name>' for each class (NaN when absent from `labels`), all floats,
  and 'confusion_matrix': (C, C) int64 array, rows true, columns predicted.
  """
  num_classes = len(class_names)
  scores = np.asarray(logits_or_probs)
  preds = scores.argmax(axis=-1) if scores.ndim == 2 else scores
  labels = np.asarray(labels)
  if labels.ndim == 2:
    labels = labels.argmax(axis=-1)
  if scores.ndim == 2 and scores.shape[1] != num_classes:
    raise ValueError(f"{scores.shape[1]} score columns for {num_classes} class names")
  cm = confusion_matrix(preds, labels, num_classes)
  support = cm.sum(axis=1)
  per_class = np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)
  total = cm.sum()
  out: dict = {
      "accuracy": float(np.trace(cm) / total) if total else float("nan"),
      "mean_class_accuracy": _nanmean(per_class),
  }
  for name, v in zip(class_names, per_class):
    out[f"class_acc/{name}"] = float(v)
  out["confusion_matrix"] = cm
  return out


def summary(scalars: dict[str, float], limit: int = 8) -> str:
  """A readable line of an evaluation's headline scalars (means first)."""
  keys = sorted(scalars, key=lambda k: ("mean" not in k, k.count("/"), k))[:limit]
  return ", ".join(f"{k}={scalars[k]:.4g}" for k in keys)
