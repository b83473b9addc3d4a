"""Hand-computed values for the task losses."""

import jax.numpy as jnp
import numpy as np
import pytest

from norface_jax.losses import classification as cl

LN2, LN4 = 0.693147, 1.386294


def test_sigmoid_bce():
  # logits [0, 2], labels [1, 0]: -ln s(0) = ln 2 = 0.693147,
  # -ln(1 - s(2)) = ln(1 + e^2) = 2.126928; mean = 1.410038.
  logits, labels = jnp.array([[0.0, 2.0]]), jnp.array([[1.0, 0.0]])
  np.testing.assert_allclose(cl.sigmoid_bce(logits, labels), 1.410038, rtol=1e-5)
  # Mask out the second AU -> only ln 2 remains.
  np.testing.assert_allclose(
      cl.sigmoid_bce(logits, labels, mask=jnp.array([[1, 0]])), LN2, rtol=1e-5)
  # pos_weight [3, 1]: (3 ln 2 + 2.126928) / 2 = (2.079442 + 2.126928) / 2.
  np.testing.assert_allclose(
      cl.sigmoid_bce(logits, labels, pos_weight=jnp.array([3.0, 1.0])),
      2.103185, rtol=1e-5)
  # Fully masked -> 0, not NaN.
  assert float(cl.sigmoid_bce(logits, labels, mask=jnp.zeros((1, 2)))) == 0.0


def test_softmax_ce():
  # logits [0, 0, ln 2] -> softmax [1/4, 1/4, 1/2];
  # label 2 -> ln 2, label 0 -> ln 4; batch mean = 1.039721.
  logits = jnp.array([[0.0, 0.0, np.log(2.0)]] * 2)
  labels = jnp.array([2, 0])
  np.testing.assert_allclose(cl.softmax_ce(logits, labels), (LN2 + LN4) / 2,
                             rtol=1e-5)
  np.testing.assert_allclose(
      cl.softmax_ce(logits, labels, mask=jnp.array([1, 0])), LN2, rtol=1e-5)
  # Smoothing 0.3, C=3, label 2: targets [0.1, 0.1, 0.8];
  # loss = 0.2 ln 4 + 0.8 ln 2 = 0.277259 + 0.554518 = 0.831777.
  np.testing.assert_allclose(
      cl.softmax_ce(logits[:1], labels[:1], label_smoothing=0.3), 0.831777,
      rtol=1e-5)


def test_soft_ce():
  # targets [0.5, 0.5, 0] on softmax [1/4, 1/4, 1/2]: 0.5 ln 4 + 0.5 ln 4 = ln 4.
  logits = jnp.array([[0.0, 0.0, np.log(2.0)]])
  np.testing.assert_allclose(cl.soft_ce(logits, jnp.array([[0.5, 0.5, 0.0]])),
                             LN4, rtol=1e-5)


def test_l2_regression():
  # squared errors [1, 4, 0, 16]: mean 21/4 = 5.25; mask [[1,0],[1,1]] -> 17/3.
  preds = jnp.array([[1.0, 2.0], [3.0, 4.0]])
  targets = jnp.array([[0.0, 0.0], [3.0, 0.0]])
  np.testing.assert_allclose(cl.l2_regression(preds, targets), 5.25, rtol=1e-6)
  np.testing.assert_allclose(
      cl.l2_regression(preds, targets, mask=jnp.array([[1, 0], [1, 1]])),
      17 / 3, rtol=1e-6)


def test_balanced_pos_weight_and_task_loss():
  from norface_jax.training import tasks
  # AU a: 1 positive of 4 -> 3; AU b: 2 of 4 -> 1; AU c: none -> the cap; AU d: 1 of 3
  # labelled (-1 = unlabelled) -> 2; AU e: 3 of 4 -> 1/3, clipped up to 1.
  labels = np.array([[1, 1, 0, 1, 1], [0, 1, 0, 0, 1], [0, 0, 0, 0, 1], [0, 0, 0, -1, 0]])
  assert cl.balanced_pos_weight(labels, max_weight=5.0) == (3.0, 1.0, 5.0, 2.0, 1.0)
  task = tasks.Task("au_detection", ("AU1", "AU2"), pos_weight=(3.0, 1.0))
  logits, y = jnp.array([[0.0, 0.0]]), jnp.array([[1.0, 1.0]])
  np.testing.assert_allclose(task.loss(logits, y), (3 * LN2 + LN2) / 2, rtol=1e-6)


def test_stage2_total_loss_weighs_each_router_term_by_hand():
  """Eq. 11 with lambda_g&l split: table 12's "w/o L_global" / "w/o L_local" rows."""
  import ml_collections
  from norface_jax.training import stage2
  r = {"importance": 2.0, "global_entropy": 3.0, "local_entropy": 5.0}
  w = lambda imp, g, l: ml_collections.ConfigDict(dict(lambda_imp=imp, lambda_global=g,  # noqa: E731
                                                       lambda_local=l))
  assert stage2.total_loss(1.0, r, w(0.1, 0.01, 0.001)) == pytest.approx(1.0 + 0.2 + 0.03 + 0.005)
  assert stage2.total_loss(1.0, r, w(0.0, 0.0, 1.0)) == pytest.approx(6.0)
  assert stage2.total_loss(1.0, r, w(0.0, 1.0, 0.0)) == pytest.approx(4.0)
