"""DeepFN: pre-processing, warp, autoencoder, template, LeNet (hand cases and shapes)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from norface_jax.deepfn import autoencoder
from norface_jax.deepfn import classify
from norface_jax.deepfn import lenet
from norface_jax.deepfn import preprocess
from norface_jax.deepfn import template
from norface_jax.deepfn import warp


def test_gray_and_hist_eq_hand_case():
  # Luma of (100, 200, 50): 0.299*100 + 0.587*200 + 0.114*50 = 29.9 + 117.4 + 5.7 = 153.
  assert int(preprocess.to_gray(jnp.array([[[100, 200, 50]]], jnp.uint8))[0, 0]) == 153
  # Values 10, 20, 20, 30: cdf 1, 3, 4; cdf_min 1, N - cdf_min = 3:
  # lut(10) = 0, lut(20) = round(2 * 255 / 3) = 170, lut(30) = 255.
  out = preprocess.equalize_hist(jnp.array([[10, 20, 20, 30]], jnp.uint8))
  np.testing.assert_array_equal(np.asarray(out), [[0, 170, 170, 255]])
  # A constant image stays as it is; a batch equalizes each image on its own.
  const = jnp.full((2, 3, 3), 77, jnp.uint8)
  np.testing.assert_array_equal(np.asarray(preprocess.equalize_hist(const)), 77)
  x = preprocess.preprocess(jnp.zeros((2, 64, 64, 3), jnp.uint8), 32)
  assert x.shape == (2, 32, 32, 1) and x.dtype == jnp.float32


def test_pixel_shuffle_hand_example():
  # One pixel, 8 channels -> 2x2 pixels, 2 channels; PyTorch order c*r*r + i*r + j.
  x = jnp.arange(8.0).reshape(1, 1, 1, 8)
  out = np.asarray(autoencoder.pixel_shuffle(x, 2))
  np.testing.assert_array_equal(out[0, :, :, 0], [[0, 1], [2, 3]])
  np.testing.assert_array_equal(out[0, :, :, 1], [[4, 5], [6, 7]])


def test_autoencoder_shapes_and_names():
  m = autoencoder.AutoEncoder(widths=(4, 8, 8, 16), latent=8)
  x = jnp.zeros((2, 64, 64, 1))
  params = m.init(jax.random.PRNGKey(0), x, x)["params"]
  assert set(params) == {"encoder", "decoder_x", "decoder_y"}
  assert set(params["decoder_y"]) == {"upscale_0", "upscale_1", "upscale_2", "upscale_3", "output"}
  z = m.apply({"params": params}, x, method=lambda mod, v: mod.encoder(v))
  assert z.shape == (2, 4, 4, 8)  # (S/16, S/16, widths[-1] / 2), as 8x8x512 at 128.
  y = m.apply({"params": params}, x, method=autoencoder.AutoEncoder.normalize)
  assert y.shape == (2, 64, 64, 1) and float(y.min()) >= 0 and float(y.max()) <= 1
  # The paper's encoder at 128x128: 8x8x512 latent grid.
  shapes = jax.eval_shape(lambda v: autoencoder.Encoder().init_with_output(
      jax.random.PRNGKey(0), v)[0], jnp.zeros((1, 128, 128, 1)))
  assert shapes.shape == (1, 8, 8, 512)


def test_warp_identity_at_zero_noise():
  img = jax.random.uniform(jax.random.PRNGKey(1), (3, 32, 32, 1))
  zero = warp.WarpConfig(rotation_deg=0, scale=0, shift=0, noise=0)
  warped, target = warp.augment(jax.random.PRNGKey(2), img, zero)
  np.testing.assert_allclose(np.asarray(warped), np.asarray(img), atol=1e-6)
  np.testing.assert_allclose(np.asarray(target), np.asarray(img), atol=1e-6)
  # Warp noise alone changes the input but not the target.
  warped, target = warp.augment(jax.random.PRNGKey(2), img, warp.WarpConfig(0, 0, 0, 5, 0.05))
  np.testing.assert_allclose(np.asarray(target), np.asarray(img), atol=1e-6)
  assert float(jnp.abs(warped - img).mean()) > 1e-3


def test_template_is_highest_median_activation():
  # Subject 0: AUs active 1, 0, 0 times (median 0); subject 1: 2, 2, 0 (median 2);
  # subject 2: 1, 1, 1 (median 1).
  au = np.array([[1, 0, 0], [0, 0, 0],
                 [1, 1, 0], [1, 1, 0],
                 [1, 1, 1], [0, 0, 0]])
  subject = np.array([0, 0, 1, 1, 2, 2])
  assert template.median_activation(au, subject) == {0: 0.0, 1: 2.0, 2: 1.0}
  assert template.choose_template(au, subject) == 1


def test_lenet_shapes_and_param_count():
  m = lenet.LeNet5(12)
  params = m.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 1)))["params"]
  assert sum(a.size for a in jax.tree.leaves(params)) == 388_564  # the paper's 388K.
  assert params["dense_0"]["kernel"].shape == (14 * 14 * 16, 120)
  assert m.apply({"params": params}, jnp.zeros((3, 64, 64, 1))).shape == (3, 12)


def test_lenet_keeps_best_validation_f1():
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(48, 32, 32, 1)).astype(np.float32)
  y = (x[:, :16].mean((1, 2, 3)) > x[:, 16:].mean((1, 2, 3)))[:, None].astype(np.float32)
  cfg = ml_collections.ConfigDict(dict(batch_size=16, epochs=4, lr=3e-3, b1=0.5, b2=0.999))
  trainer = classify.make_trainer(cfg, 1)
  params, hist = classify.train(trainer, 0, x[:32], y[:32], x[32:], y[32:])
  assert len(hist["val_f1"]) == 4
  assert hist["best_epoch"] == int(np.argmax(hist["val_f1"]))  # first of ties
  f1 = classify.mean_f1(classify.predict(trainer, params, x[32:]), y[32:])
  assert abs(f1 - max(hist["val_f1"])) < 1e-9
  assert classify.is_better(0.5, 0.4) and not classify.is_better(0.5, 0.5)
