"""`fan.soft_argmax`, the differentiable landmark read-out behind L_lm, by hand."""

import jax
import jax.numpy as jnp
import numpy as np

from norface_jax.models import fan


def test_single_peak():
  # One landmark, an 8x8 heatmap with a peak of 1 at row 2, column 5: at a low
  # temperature the estimate is that pixel's centre ((5 + 0.5) / 8, (2 + 0.5) / 8).
  hm = np.zeros((1, 8, 8, 1), np.float32)
  hm[0, 2, 5, 0] = 1.0
  np.testing.assert_allclose(np.asarray(fan.soft_argmax(jnp.asarray(hm), 0.01)),
                             [[[5.5 / 8, 2.5 / 8]]], atol=1e-6)
  # At temperature 1 the 63 other pixels weigh 1 each and the peak e. The 64 pixel
  # centres sum to 32 along x (8 rows of 0.5 + 1.5 + ... + 7.5, over 8), so
  # x = (32 - 5.5/8 + e * 5.5/8) / (63 + e), and y alike with 2.5/8.
  e = np.e
  want = [(32 - 5.5 / 8 + e * 5.5 / 8) / (63 + e), (32 - 2.5 / 8 + e * 2.5 / 8) / (63 + e)]
  np.testing.assert_allclose(np.asarray(fan.soft_argmax(jnp.asarray(hm), 1.0))[0, 0], want,
                             atol=1e-6)


def test_two_equal_peaks_give_the_midpoint_and_gradients_flow():
  hm = np.zeros((2, 16, 16, 3), np.float32)
  hm[:, 4, 2, :] = hm[:, 4, 10, :] = 1.0
  got = np.asarray(fan.soft_argmax(jnp.asarray(hm), 0.02))
  np.testing.assert_allclose(got[..., 0], 6.5 / 16, atol=1e-6)
  np.testing.assert_allclose(got[..., 1], 4.5 / 16, atol=1e-6)
  # Raising one peak moves x towards it: d x / d hm[4, 10] > 0 > d x / d hm[4, 2].
  g = jax.grad(lambda h: fan.soft_argmax(h, 0.5)[0, 0, 0])(jnp.asarray(hm))
  assert g[0, 4, 10, 0] > 0 > g[0, 4, 2, 0]
