"""Tests for norface_jax.evaluation.metrics against scikit-learn and hand values."""

import numpy as np
import pytest
from sklearn import metrics as skm

from norface_jax.evaluation import metrics


def _random_detection(seed=0, n=200, a=5):
  rng = np.random.default_rng(seed)
  labels = (rng.random((n, a)) < 0.3).astype(np.int64)
  probs = np.clip(labels * 0.4 + rng.random((n, a)) * 0.6, 0, 1)
  return probs, labels


def test_f1_and_accuracy_match_sklearn():
  probs, labels = _random_detection()
  preds = (probs >= 0.5).astype(int)
  f1 = metrics.f1_per_au(probs, labels)
  acc = metrics.accuracy_per_au(probs, labels)
  for a in range(labels.shape[1]):
    assert f1[a] == pytest.approx(skm.f1_score(labels[:, a], preds[:, a], zero_division=0))
    assert acc[a] == pytest.approx(skm.accuracy_score(labels[:, a], preds[:, a]))
  # Binary predictions give the same answer as probabilities.
  np.testing.assert_allclose(metrics.f1_per_au(preds, labels), f1)


def test_f1_threshold():
  probs, labels = _random_detection(seed=1)
  preds = (probs >= 0.7).astype(int)
  f1 = metrics.f1_per_au(probs, labels, threshold=0.7)
  want = skm.f1_score(labels, preds, average=None, zero_division=0)
  np.testing.assert_allclose(f1, want)


def test_f1_edge_cases():
  labels = np.zeros((6, 3), int)
  labels[:, 2] = 1
  preds = np.zeros((6, 3), int)
  preds[0, 1] = 1                 # AU 1: one false positive, no positives at all.
  # AU 0: all negative, all predicted negative -> F1 = 0 (TP = 0), accuracy 1.
  # AU 2: all positive, none predicted -> F1 = 0, accuracy 0.
  f1 = metrics.f1_per_au(preds, labels)
  acc = metrics.accuracy_per_au(preds, labels)
  np.testing.assert_allclose(f1, [0.0, 0.0, 0.0])
  np.testing.assert_allclose(acc, [1.0, 5 / 6, 0.0])
  for a in range(3):
    assert f1[a] == skm.f1_score(labels[:, a], preds[:, a], zero_division=0)


def test_masks_exclude_entries():
  probs, labels = _random_detection(seed=2, n=100, a=3)
  rng = np.random.default_rng(3)
  mask = rng.random(labels.shape) > 0.3
  mask[:, 2] = False  # AU with no valid label at all.
  f1 = metrics.f1_per_au(probs, labels, mask=mask)
  acc = metrics.accuracy_per_au(probs, labels, mask=mask)
  for a in range(2):
    m = mask[:, a]
    p = (probs[m, a] >= 0.5).astype(int)
    assert f1[a] == pytest.approx(skm.f1_score(labels[m, a], p, zero_division=0))
    assert acc[a] == pytest.approx(skm.accuracy_score(labels[m, a], p))
  assert np.isnan(f1[2]) and np.isnan(acc[2])
  report = metrics.au_detection_report(probs, labels, [1, 2, 4], mask=mask)
  assert report["f1/mean"] == pytest.approx(np.mean(f1[:2]))
  assert np.isnan(report["f1/AU4"])


def test_au_detection_report_keys_and_deepfn():
  probs, labels = _random_detection(a=3)
  r = metrics.au_detection_report(probs, labels, [1, "2", "AU4"])
  assert set(r) == {f"{m}/{k}" for m in ("f1", "acc", "deepfn")
                    for k in ("AU1", "AU2", "AU4", "mean")}
  f1 = metrics.f1_per_au(probs, labels)
  acc = metrics.accuracy_per_au(probs, labels)
  assert r["f1/mean"] == pytest.approx(f1.mean())
  assert r["acc/mean"] == pytest.approx(acc.mean())
  np.testing.assert_allclose(metrics.deepfn_au_score(probs, labels), (f1 + acc) / 2)
  assert r["deepfn/AU2"] == pytest.approx((f1[1] + acc[1]) / 2)


def test_icc31_hand_example():
  # Y = [[1, 2], [2, 2], [3, 4]] (n = 3 frames, k = 2: prediction, label).
  # G = 14/6 = 7/3; row means 1.5, 2, 3.5; column means 2, 8/3.
  # SS_R = 2 * ((5/6)^2 + (1/3)^2 + (7/6)^2) = 2 * 78/36 = 13/3
  # SS_C = 3 * ((1/3)^2 + (1/3)^2) = 2/3
  # SS_T = (16 + 1 + 1 + 1 + 4 + 25) / 9 = 16/3
  # MS_R = 13/6, MS_E = (16/3 - 13/3 - 2/3) / 2 = 1/6
  # ICC = (13/6 - 1/6) / (13/6 + 1/6) = 12/14 = 6/7
  assert metrics.icc31([1, 2, 3], [2, 2, 4]) == pytest.approx(6 / 7)


def _icc31_anova_long(a, b):
  """Independent ICC(3,1): two-way ANOVA on a long table via least-squares fits."""
  n = len(a)
  y = np.concatenate([a, b])
  subj = np.concatenate([np.arange(n), np.arange(n)])
  rater = np.repeat([0, 1], n)
  design_full = np.column_stack(
      [np.eye(n)[subj], (rater == 1).astype(float)])
  design_subj = np.eye(n)[subj]
  def rss(x):
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    return np.sum((y - x @ beta) ** 2)
  ss_e = rss(design_full)
  ss_subject = np.sum((y - y.mean()) ** 2) - rss(design_subj)
  ms_r = ss_subject / (n - 1)
  ms_e = ss_e / (n - 1)
  return (ms_r - ms_e) / (ms_r + ms_e)


def test_icc31_vs_independent_implementations():
  rng = np.random.default_rng(4)
  a = rng.normal(size=50) * 2
  b = a + rng.normal(size=50) + 0.7
  got = metrics.icc31(a, b)
  assert got == pytest.approx(_icc31_anova_long(a, b))
  # For k = 2, ICC(3,1) = 2 cov(a, b) / (var a + var b).
  c = np.cov(a, b)
  assert got == pytest.approx(2 * c[0, 1] / (c[0, 0] + c[1, 1]))
  # Consistency: a constant offset does not change it.
  assert metrics.icc31(a, b + 3.0) == pytest.approx(got)
  assert metrics.icc31(a, a) == pytest.approx(1.0)
  assert np.isnan(metrics.icc31(np.zeros(5), np.zeros(5)))


def test_intensity_report():
  rng = np.random.default_rng(5)
  labels = rng.integers(0, 6, size=(40, 2)).astype(float)
  preds = labels + rng.normal(size=labels.shape)
  mask = np.ones_like(labels)
  mask[:10, 1] = 0
  r = metrics.intensity_report(preds, labels, [6, 12], mask=mask)
  assert set(r) == {f"{m}/{k}" for m in ("icc", "mse", "mae") for k in ("AU6", "AU12", "mean")}
  assert r["icc/AU12"] == pytest.approx(metrics.icc31(preds[10:, 1], labels[10:, 1]))
  assert r["mse/AU6"] == pytest.approx(skm.mean_squared_error(labels[:, 0], preds[:, 0]))
  assert r["mae/AU12"] == pytest.approx(
      skm.mean_absolute_error(labels[10:, 1], preds[10:, 1]))
  assert r["icc/mean"] == pytest.approx((r["icc/AU6"] + r["icc/AU12"]) / 2)


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_fer_report_vs_sklearn():
  rng = np.random.default_rng(6)
  names = ["neutral", "happiness", "sadness", "surprise", "fear"]
  labels = rng.integers(0, 4, size=300)   # Class 4 never occurs.
  logits = rng.normal(size=(300, 5))
  logits[np.arange(300), labels] += 1.0
  preds = logits.argmax(-1)
  r = metrics.fer_report(logits, labels, names)
  assert r["accuracy"] == pytest.approx(skm.accuracy_score(labels, preds))
  np.testing.assert_array_equal(r["confusion_matrix"],
                                skm.confusion_matrix(labels, preds, labels=range(5)))
  recall = skm.recall_score(labels, preds, labels=range(4), average=None)
  for i in range(4):
    assert r[f"class_acc/{names[i]}"] == pytest.approx(recall[i])
  assert np.isnan(r["class_acc/fear"])
  assert r["mean_class_accuracy"] == pytest.approx(recall.mean())
  assert r["mean_class_accuracy"] == pytest.approx(
      skm.balanced_accuracy_score(labels, preds))
  # One-hot labels and class-id predictions give the same report.
  r2 = metrics.fer_report(preds, np.eye(5)[labels], names)
  assert r2["accuracy"] == r["accuracy"]
