"""Optimizer pieces: warmup + cosine, the weight-decay mask, layer-wise lr decay."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from norface_jax.training import optim


def test_warmup_cosine_values():
  s = optim.warmup_cosine(1.0, total_steps=10, warmup_steps=2)
  assert float(s(0)) == 0.0 and float(s(1)) == pytest.approx(0.5) and float(s(2)) == pytest.approx(1.0)
  # Cosine from step 2 to 10: halfway (step 6) is 0.5, the end is 0.
  assert float(s(6)) == pytest.approx(0.5, abs=1e-6) and float(s(10)) == pytest.approx(0.0, abs=1e-6)


def _params():
  z = lambda *shape: jnp.zeros(shape)
  return {"encoder": {"patch_embed": {"kernel": z(2, 2, 3, 4), "bias": z(4)}, "cls": z(1, 1, 4),
                      "block_0": {"mlp": {"fc1": {"kernel": z(4, 8), "bias": z(8)}}},
                      "block_1": {"mlp": {"fc1": {"kernel": z(4, 8), "bias": z(8)}}},
                      "norm": {"scale": z(4)}},
          "head": {"kernel": z(4, 3), "bias": z(3)}}


def test_decay_mask_spares_biases_norms_and_embeddings():
  mask = optim.decay_mask(_params())
  assert mask["encoder"]["block_0"]["mlp"]["fc1"]["kernel"] is True
  assert mask["encoder"]["block_0"]["mlp"]["fc1"]["bias"] is False
  assert mask["encoder"]["cls"] is False and mask["encoder"]["norm"]["scale"] is False
  assert mask["head"]["kernel"] is True


def test_layer_scales_by_hand():
  # depth L = 2, decay 0.5: block i gets 0.5 ** (2 - i); the patch embedding and class
  # token 0.5 ** 3; the final norm and everything after the encoder 1.
  s = optim.layer_scales(_params(), 0.5, num_layers=2)
  assert float(s["encoder"]["block_0"]["mlp"]["fc1"]["kernel"]) == 0.25
  assert float(s["encoder"]["block_1"]["mlp"]["fc1"]["kernel"]) == 0.5
  assert float(s["encoder"]["patch_embed"]["kernel"]) == 0.125
  assert float(s["encoder"]["cls"]) == 0.125
  assert float(s["encoder"]["norm"]["scale"]) == 1.0
  assert float(s["head"]["kernel"]) == 1.0
  # Scanned blocks: one stacked array with a leading layer axis gets a per-layer vector.
  stacked = {"encoder": {"blocks": {"mlp": {"kernel": jnp.zeros((2, 4, 8))}}}}
  v = optim.layer_scales(stacked, 0.5, num_layers=2)["encoder"]["blocks"]["mlp"]["kernel"]
  np.testing.assert_allclose(np.asarray(v).ravel(), [0.25, 0.5])


def test_layer_decay_scales_the_updates():
  params = _params()
  config = ml_collections.ConfigDict(dict(lr=1.0, warmup_steps=0, name="sgd", momentum=0.0,
                                          weight_decay=0.0, grad_clip=0.0, layer_decay=0.5))
  tx, _ = optim.make_optimizer(config, total_steps=100, params=params, num_layers=2)
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  # SGD: update = -lr(0) * scale * grad, and lr(0) = 1 with no warmup.
  assert float(updates["encoder"]["block_0"]["mlp"]["fc1"]["kernel"][0, 0]) == pytest.approx(-0.25)
  assert float(updates["head"]["kernel"][0, 0]) == pytest.approx(-1.0)
