"""Stage-1 losses against values computed by hand (in the comments)."""

import jax.numpy as jnp
import numpy as np
import pytest

from norface_jax.losses import adversarial
from norface_jax.losses import normalization as L


def test_hinge_losses():
  real = jnp.array([2.0, 0.5, -1.0])  # relu(1 - r) = 0, 0.5, 2 -> mean 5/6
  fake = jnp.array([-2.0, 0.0, 1.0])  # relu(1 + f) = 0, 1, 2 -> mean 1
  np.testing.assert_allclose(adversarial.hinge_d_loss(real, fake), 5 / 6 + 1, rtol=1e-6)
  np.testing.assert_allclose(adversarial.hinge_g_loss(fake), 1 / 3, rtol=1e-6)  # -(-1/3)
  # Two scales average: (1/3 + (-2)) / 2.
  np.testing.assert_allclose(adversarial.hinge_g_loss([fake, jnp.full((2, 2), 2.0)]),
                             (1 / 3 - 2) / 2, rtol=1e-6)


def test_reconstruction_only_on_same_pairs():
  n = jnp.zeros((3, 2, 2, 1))
  t = jnp.stack([jnp.full((2, 2, 1), v) for v in (1.0, 2.0, 3.0)])
  # Per-sample MSE 1, 4, 9; pairs 0 and 2 are I_o = I_t -> (1 + 9) / 2 = 5.
  np.testing.assert_allclose(L.reconstruction_loss(n, t, jnp.array([1, 0, 1])), 5.0)
  np.testing.assert_allclose(L.reconstruction_loss(n, t, jnp.zeros(3)), 0.0)


def test_perceptual_identity_landmark_expression_eyebrow():
  f_t = [jnp.ones((2, 2, 2, 4)), jnp.zeros((2, 1, 1, 2))]
  f_n = [jnp.zeros((2, 2, 2, 4)), jnp.full((2, 1, 1, 2), 3.0)]
  np.testing.assert_allclose(L.perceptual_loss(f_t, f_n), 1.0 + 9.0)
  # normalize=True: per position, channel vectors on the unit sphere, squared distance
  # summed over C. Layer 1: (1,1,1,1) vs (2,2,2,2), same direction -> 0. Layer 2:
  # (1, 0) vs (0, 3) -> units (1, 0), (0, 1) -> 1 + 1 = 2 at every position. Total 2.
  g_t = [jnp.ones((2, 2, 2, 4)), jnp.broadcast_to(jnp.array([1.0, 0.0]), (2, 3, 3, 2))]
  g_n = [jnp.full((2, 2, 2, 4), 2.0), jnp.broadcast_to(jnp.array([0.0, 3.0]), (2, 3, 3, 2))]
  np.testing.assert_allclose(L.perceptual_loss(g_t, g_n, normalize=True), 2.0, rtol=1e-6)
  # cos((1,0),(1,0)) = 1 -> 0; cos((1,0),(0,2)) = 0 -> 1; mean 0.5.
  np.testing.assert_allclose(L.identity_loss(jnp.array([[1.0, 0], [1, 0]]),
                                             jnp.array([[1.0, 0], [0, 2]])), 0.5, atol=1e-6)
  lm_t = jnp.zeros((1, 68, 2))
  lm_n = lm_t.at[:, 0].set(1.0).at[:, 40].set(100.0)  # point 40 is not on the contour
  # Contour 17 points x 2 coords; one point off by (1, 1): 2 / 34.
  np.testing.assert_allclose(L.landmark_loss(lm_t, lm_n), 2 / 34, rtol=1e-6)
  # Unit sphere: (0, 2) -> (0, 1), (1, 0) stays; squared diffs (1, 1), mean over D = 2 -> 1
  # (= (2 - 2 cos) / D with cos = 0).
  np.testing.assert_allclose(L.expression_loss(jnp.array([[0.0, 2.0]]), jnp.array([[1.0, 0.0]])),
                             1.0, rtol=1e-6)
  # Scale-free: (0, 2) and (0, 5) are the same direction -> 0; (3, 4) vs (4, 3): units
  # (0.6, 0.8), (0.8, 0.6), squared diffs (0.04, 0.04), mean 0.04.
  np.testing.assert_allclose(L.expression_loss(jnp.array([[0.0, 2.0], [3.0, 4.0]]),
                                               jnp.array([[0.0, 5.0], [4.0, 3.0]])),
                             (0.0 + 0.04) / 2, rtol=1e-5, atol=1e-7)
  # AU intensities (normalize=False): the length counts. (0, 2) vs (0, 5): squared diffs
  # (0, 9), mean over D = 4.5; (3, 4) vs (4, 3): (1, 1) -> 1; batch mean 2.75.
  np.testing.assert_allclose(L.expression_loss(jnp.array([[0.0, 2.0], [3.0, 4.0]]),
                                               jnp.array([[0.0, 5.0], [4.0, 3.0]]),
                                               normalize=False), 2.75, rtol=1e-6)
  np.testing.assert_allclose(L.eyebrow_loss(jnp.zeros((2, 4)), jnp.ones((2, 4))), 1.0)


def test_weighted_total_uses_paper_weights():
  comps = {k: jnp.float32(1.0) for k in L.WEIGHTS}
  # 1 (adv) + 10 + 5 + 10 + 5000 + 5000 + 10.
  np.testing.assert_allclose(L.weighted_total(comps, L.PAPER_WEIGHTS), 10036.0)
  with pytest.raises(KeyError, match="lambda_eye"):
    L.weighted_total({"eye": jnp.float32(1.0)}, {"lambda_rec": 1.0})
