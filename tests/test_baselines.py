"""The floor and the probes: hand-computed trivial predictors, probes that learn what is there."""

import numpy as np
import pytest

from norface_jax.evaluation import baselines


def test_trivial_au_is_all_positive_f1_and_fer_is_the_majority_class():
  test = np.array([[1, 0], [1, 0], [0, 1], [0, 0]], np.float32)  # base rates 1/2 and 1/4
  # All-positive F1 = 2p / (1 + p): 2/3 and 2/5.
  assert baselines.trivial("au_detection", test, test) == pytest.approx(100 * (2 / 3 + 2 / 5) / 2)
  train = np.array([2, 2, 1, 0, 2])
  assert baselines.trivial("fer", train, np.array([2, 1, 2, 2])) == pytest.approx(75.0)
  with pytest.raises(ValueError, match="au_intensity"):
    baselines.trivial("au_intensity", test, test)


def test_pos_weight_is_the_trainers_balanced_rule():
  y = np.array([[1, 0, 1], [0, 0, 1], [0, 0, 1], [0, 1, 1], [0, 0, 0]], np.float32)
  np.testing.assert_allclose(baselines.pos_weight(y), [4.0, 4.0, 1.0])  # 4/1, 4/1, 1/4 -> 1


def test_grey_pixels_box_average():
  img = np.zeros((1, 64, 64, 3), np.uint8)
  img[0, :2, :2] = 255
  out = baselines.grey_pixels(img)
  assert out.shape == (1, 1024)
  assert out[0, 0] == pytest.approx(1.0) and out[0, 1:].max() == 0.0
  with pytest.raises(ValueError, match="60x60"):
    baselines.grey_pixels(np.zeros((1, 60, 60, 3), np.uint8))


def _faces(n, seed):
  """Noise faces; AU 0 = a bright square top left, AU 1 = one bottom right."""
  rng = np.random.default_rng(seed)
  x = rng.integers(0, 100, (n, 32, 32, 3)).astype(np.uint8)
  y = rng.integers(0, 2, (n, 2)).astype(np.float32)
  x[y[:, 0] == 1, 2:10, 2:10] = 250
  x[y[:, 1] == 1, 20:28, 20:28] = 250
  return x, y


def test_linear_and_cnn_probes_learn_a_visible_cue_and_not_noise():
  x_tr, y_tr = _faces(256, 0)
  x_te, y_te = _faces(128, 1)
  assert baselines.linear_probe(x_tr, y_tr, x_te, y_te, "au_detection", steps=300) > 95.0
  assert baselines.cnn_probe(x_tr, y_tr, x_te, y_te, "au_detection", steps=60,
                             widths=(8, 8, 8)) > 80.0
  # Labels unrelated to the faces: the probe cannot beat chance by much on new faces.
  shuffled = np.random.default_rng(2).permutation(y_tr)
  assert baselines.linear_probe(x_tr, shuffled, x_te, y_te, "au_detection", steps=300) < 70.0
  # FER: the class is which square is bright.
  cls_tr, cls_te = y_tr[:, 0].astype(int), y_te[:, 0].astype(int)
  assert baselines.linear_probe(x_tr, cls_tr, x_te, cls_te, "fer", steps=300,
                                num_classes=7) > 95.0
