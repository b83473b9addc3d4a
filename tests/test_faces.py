"""Face crops, 5-point alignment and histogram equalization on hand-computed cases."""

import numpy as np
import pytest

from norface_jax.data import faces


def test_square_box_grows_by_margin_on_each_side():
  # Box 10x20 at (0, 0): centre (5, 10); side 20 * (1 + 2 * 0.25) = 30.
  assert faces.square_box((0, 0, 10, 20), 0.25) == (-10.0, -5.0, 30.0)


def test_crop_box_pads_outside_with_black():
  image = np.full((4, 4, 3), 7, np.uint8)
  out = faces.crop_box(image, (2, 2, 4, 4))          # square (0, 0)-(4, 4) -> shifted by 2.
  assert out.shape == (4, 4, 3)
  np.testing.assert_array_equal(out[:2, :2], 7)
  np.testing.assert_array_equal(out[2:], 0)
  np.testing.assert_array_equal(out[:, 2:], 0)
  assert faces.crop_box(image, (0, 0, 4, 4), size=8).shape == (8, 8, 3)


def test_similarity_transform_recovers_rotation_scale_shift():
  rng = np.random.default_rng(0)
  src = rng.uniform(0, 100, (5, 2))
  th, s = 0.3, 1.7
  rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
  dst = src @ (s * rot).T + [3.0, -4.0]
  m = faces.similarity_transform(src, dst)
  np.testing.assert_allclose(m[:, :2], s * rot, atol=1e-9)
  np.testing.assert_allclose(m[:, 2], [3.0, -4.0], atol=1e-9)


def test_warp_affine_moves_a_pixel_by_the_shift():
  image = np.zeros((20, 20, 3), np.uint8)
  image[5, 8] = 255                                   # (x=8, y=5)
  out = faces.warp_affine(image, np.array([[1.0, 0, 3], [0, 1.0, 2]]), 20)
  assert tuple(np.argwhere(out[..., 0] == 255)[0]) == (7, 11)


def test_five_points_and_alignment_put_the_eyes_on_the_template():
  lm = np.zeros((68, 2))
  lm[36:42] = [30, 40]
  lm[42:48] = [70, 40]
  lm[30] = [50, 60]
  lm[48], lm[54] = [35, 80], [65, 80]
  pts = faces.five_points(lm)
  np.testing.assert_allclose(pts, [[30, 40], [70, 40], [50, 60], [35, 80], [65, 80]])
  image = np.zeros((120, 120, 3), np.uint8)
  image[39:42, 29:32] = 255                            # a bright dot on the left eye.
  out = faces.align_five_points(image, pts, 112)
  m = faces.similarity_transform(pts, faces.REFERENCE_5PTS_112)
  want = pts[0] @ m[:, :2].T + m[:, 2]
  y, x = np.unravel_index(np.argmax(out[..., 0]), out.shape[:2])
  assert abs(x - want[0]) <= 1.5 and abs(y - want[1]) <= 1.5


def test_equalize_histogram_by_hand():
  # Values 0,0,10,200: cdf 2,3,4; cdf_min 2; lut[10] = 255*(3-2)/(4-2) = 127.5 -> 128.
  out = faces.equalize_histogram(np.array([[0, 0], [10, 200]], np.uint8))
  np.testing.assert_array_equal(out, [[0, 0], [128, 255]])
  flat = np.full((3, 3), 9, np.uint8)
  np.testing.assert_array_equal(faces.equalize_histogram(flat), flat)
  rgb = np.random.default_rng(0).integers(60, 120, (16, 16, 3)).astype(np.uint8)
  eq = faces.equalize_histogram(rgb)
  assert eq.shape == rgb.shape and eq.dtype == np.uint8
  assert np.ptp(eq.mean(-1)) > np.ptp(rgb.mean(-1))   # contrast stretched.


@pytest.mark.parametrize("shape", [(30, 50, 3), (50, 30, 3)])
def test_center_square(shape):
  assert faces.center_square(np.zeros(shape, np.uint8)).shape == (30, 30, 3)
