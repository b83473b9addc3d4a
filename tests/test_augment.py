"""Tests for norface_jax.data.augment: shapes, determinism, label mixing, pairing."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from norface_jax.data import augment

B, H, W = 4, 16, 12


def _images(c=3, seed=0):
  return jax.random.uniform(jax.random.key(seed), (B, H, W, c))


def test_flip_flips_selected_samples():
  x = _images()
  out = augment.random_flip(jax.random.key(1), x)
  for i in range(B):
    flipped = np.allclose(out[i], x[i, :, ::-1])
    same = np.allclose(out[i], x[i])
    assert flipped != same
  assert np.allclose(augment.random_flip(jax.random.key(1), x, prob=1.0), x[:, :, ::-1])


@pytest.mark.parametrize("fn", [
    lambda k, x: augment.random_flip(k, x),
    lambda k, x: augment.random_resized_crop(k, x, (0.5, 1.0)),
    lambda k, x: augment.color_jitter(k, x, 0.2, 0.2, 0.2, 0.05),
    lambda k, x: augment.cutout(k, x, 0.3),
])
def test_shape_dtype_determinism_jit(fn):
  x = _images()
  a = fn(jax.random.key(3), x)
  b = jax.jit(fn)(jax.random.key(3), x)
  c = fn(jax.random.key(4), x)
  assert a.shape == x.shape and a.dtype == x.dtype
  np.testing.assert_allclose(a, b, atol=1e-5)
  assert not np.allclose(a, c)
  assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0


def test_crop_full_box_is_identity_and_half_box_zooms():
  x = _images()
  full = jnp.tile(jnp.array([[0.0, 0.0, 1.0, 1.0]]), (B, 1))
  np.testing.assert_allclose(augment.crop_and_resize(x, full), x, atol=1e-6)
  # The left half of a horizontal ramp, resized to full width, is a ramp over 0..0.5.
  ramp = jnp.broadcast_to((jnp.arange(W) + 0.5) / W, (B, H, W))[..., None]
  half = jnp.tile(jnp.array([[0.0, 0.0, 1.0, 0.5]]), (B, 1))
  out = augment.crop_and_resize(ramp, half)
  want = (jnp.arange(W) + 0.5) / W * 0.5
  # Interior pixels (the edge ones clamp) follow the zoomed ramp exactly.
  np.testing.assert_allclose(out[0, 0, 1:-1, 0], want[1:-1], atol=1e-6)


def test_crop_boxes_respect_scale():
  boxes = augment.sample_crop_boxes(jax.random.key(0), 1000, (0.5, 0.9), (3 / 4, 4 / 3))
  area = boxes[:, 2] * boxes[:, 3]
  assert float(area.min()) >= 0.5 - 1e-6 and float(area.max()) <= 0.9 + 1e-6
  assert float((boxes[:, 0] + boxes[:, 2]).max()) <= 1 + 1e-6
  assert float((boxes[:, 1] + boxes[:, 3]).max()) <= 1 + 1e-6


def test_mixup_label_weights_match_image_coefficient():
  # Sample i is the constant image i/(B-1) with one-hot label i.
  vals = jnp.arange(B) / (B - 1)
  x = jnp.broadcast_to(vals[:, None, None, None], (B, H, W, 3))
  y = jnp.eye(B)
  xm, ym = augment.mixup(jax.random.key(5), x, y, alpha=0.4)
  np.testing.assert_allclose(ym.sum(-1), 1.0, atol=1e-6)
  # Image value = sum_j y_mix[i, j] * value_j: same coefficients for images and labels.
  np.testing.assert_allclose(xm[:, 0, 0, 0], ym @ vals, atol=1e-6)
  assert np.allclose(xm, xm[:, :1, :1, :1])  # Mixing is uniform over pixels.


def test_mixup_multi_label_linear():
  x = _images()
  y = jnp.array([[1, 0, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0]], jnp.float32)
  _, ym = augment.mixup(jax.random.key(6), x, y, alpha=1.0)
  assert float(ym.min()) >= 0 and float(ym.max()) <= 1
  # Every mixed row is a convex combination of two original rows.
  assert np.all((np.asarray(ym) > 0) <= (np.asarray(y) > 0).any(0))


def test_cutmix_label_weight_is_pasted_area():
  x = jnp.broadcast_to(jnp.arange(B, dtype=jnp.float32)[:, None, None, None], (B, H, W, 1))
  y = jnp.eye(B)
  for seed in range(5):
    xm, ym = augment.cutmix(jax.random.key(seed), x, y, alpha=1.0)
    np.testing.assert_allclose(ym.sum(-1), 1.0, atol=1e-6)
    for i in range(B):
      own = np.mean(np.asarray(xm[i, ..., 0]) == i)
      # Weight on the sample's own label = fraction of pixels it kept
      # (the pasted sample may be itself, then the weight is 1).
      assert float(ym[i, i]) == pytest.approx(own, abs=1e-6)


def test_cutout_zeroes_a_square():
  x = jnp.ones((B, H, W, 2))
  out = augment.cutout(jax.random.key(7), x, 0.25)
  holes = np.asarray(out[..., 0] == 0)
  assert np.all(holes.sum((1, 2)) <= round(0.25 * H) * round(0.25 * W))
  assert np.all(holes.sum((1, 2)) > 0)
  np.testing.assert_array_equal(out[..., 0], out[..., 1])


def test_color_jitter_pairs_share_parameters():
  x = _images()
  out = augment.color_jitter(jax.random.key(8), jnp.concatenate([x, x], -1),
                             0.2, 0.3, 0.3, 0.1)
  np.testing.assert_allclose(out[..., :3], out[..., 3:], atol=1e-6)
  with pytest.raises(ValueError, match="saturation"):
    augment.color_jitter(jax.random.key(8), x[..., :1], 0.2, 0.2, 0.2, 0.0)
  gray = augment.color_jitter(jax.random.key(8), x[..., :1], 0.2, 0.2)
  assert gray.shape == (B, H, W, 1)


CFG = {"flip": True, "crop_scale": (0.6, 1.0), "color_jitter": 0.2, "mixup": 0.4,
       "cutmix": 1.0, "cutout": 0.2}


def test_augment_batch_paired_streams_get_identical_geometry():
  x = _images()
  y = jnp.eye(B)
  fn = jax.jit(functools.partial(augment.augment_batch, cfg=CFG))
  (orig, norm), ym = fn(jax.random.key(9), (x, x), y)
  assert orig.shape == x.shape and norm.shape == x.shape
  np.testing.assert_allclose(orig, norm, atol=1e-6)
  np.testing.assert_allclose(ym.sum(-1), 1.0, atol=1e-6)
  # Different content in the two streams still gets the same geometry: feed
  # two copies of a coordinate image and compare.
  coords = jnp.stack(jnp.meshgrid(jnp.linspace(0, 1, H), jnp.linspace(0, 1, W),
                                  indexing="ij"), -1)
  coords = jnp.broadcast_to(coords, (B, H, W, 2))
  geo_cfg = {"flip": True, "crop_scale": (0.5, 1.0)}
  (a, b), _ = augment.augment_batch(jax.random.key(10), (coords, 1.0 - coords), None,
                                    geo_cfg)
  np.testing.assert_allclose(a, 1.0 - b, atol=1e-6)


def test_augment_batch_deterministic_and_validates_keys():
  x = _images()
  y = jnp.eye(B)
  a, ya = augment.augment_batch(jax.random.key(11), x, y, CFG)
  b, yb = augment.augment_batch(jax.random.key(11), x, y, CFG)
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(ya, yb)
  with pytest.raises(ValueError, match="crop_sclae"):
    augment.augment_batch(jax.random.key(0), x, y, {"crop_sclae": (0.8, 1.0)})
  with pytest.raises(ValueError, match="labels_soft"):
    augment.augment_batch(jax.random.key(0), x, None, {"mixup": 0.2})
  same, ys = augment.augment_batch(jax.random.key(0), x, y, {})
  np.testing.assert_array_equal(same, x)
