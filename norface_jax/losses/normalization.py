"""The stage-1 (F_nor) losses of Norface eq. 3-10 as pure functions, and their sum.

Every "L2" of the paper is a mean squared difference here (mean over the batch and the
feature/pixel axes), so the paper's weights keep their meaning across image sizes.
Images are float in [0, 1], (B, H, W, C). The perception networks' outputs are
computed by the caller; these functions only compare them.

Scale: L_exp compares the expression embeddings on the unit sphere (FECNet's are
L2-normalised, so this is the paper's definition; for the SynthFACS regressor's raw
penultimate layer it removes an arbitrary scale); `perceptual_loss(normalize=True)`
unit-normalises each feature vector over channels first (LPIPS without learned
weights), an option for feature stacks whose scale means nothing (SynthFACS).
Landmarks are expected in image-size units (0..1).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import jax
import jax.numpy as jnp

# iBUG-68 jaw contour points (0..16): the landmarks L_lm compares (eq. 8).
CONTOUR = tuple(range(17))

# Component name -> config weight name (eq. 3). L_adv has weight 1.
WEIGHTS = {"adv": None, "rec": "lambda_rec", "perc": "lambda_perc", "id": "lambda_id",
           "lm": "lambda_lm", "exp": "lambda_exp", "eye": "lambda_eye"}
PAPER_WEIGHTS = {"lambda_rec": 10.0, "lambda_perc": 5.0, "lambda_id": 10.0,
                 "lambda_lm": 5000.0, "lambda_exp": 5000.0, "lambda_eye": 10.0}


def _mse_per_sample(a: jax.Array, b: jax.Array) -> jax.Array:
  d = (a.astype(jnp.float32) - b.astype(jnp.float32)) ** 2
  return jnp.mean(d.reshape(d.shape[0], -1), axis=1)


def reconstruction_loss(image_n: jax.Array, image_t: jax.Array, same: jax.Array) -> jax.Array:
  """Eq. 5, ||I_n - I_t||^2, only over the pairs drawn with I_o = I_t (`same`, (B,) 0/1)."""
  same = same.astype(jnp.float32)
  return jnp.sum(same * _mse_per_sample(image_n, image_t)) / jnp.maximum(jnp.sum(same), 1.0)


def _unit(x: jax.Array, eps: float = 1e-8) -> jax.Array:
  x = x.astype(jnp.float32)
  return x / (jnp.linalg.norm(x, axis=-1, keepdims=True) + eps)


def perceptual_loss(feats_t: Sequence[jax.Array], feats_n: Sequence[jax.Array],
                    normalize: bool = False) -> jax.Array:
  """Eq. 6: squared VGG feature differences, summed over the (last two) layers.

  `normalize`: each (B, H, W, C) map is unit-normalised over C at every position and
  the squared distance summed over C (so each position contributes 2 - 2 cos, 0..4),
  then averaged over positions and the batch.
  """
  if normalize:
    return sum(jnp.mean(jnp.sum((_unit(t) - _unit(n)) ** 2, -1)) for t, n in zip(feats_t, feats_n))
  return sum(jnp.mean(_mse_per_sample(t, n)) for t, n in zip(feats_t, feats_n))


def identity_loss(emb_t: jax.Array, emb_n: jax.Array, eps: float = 1e-8) -> jax.Array:
  """Eq. 7: 1 - cos(E_id(I_t), E_id(I_n)), averaged over the batch."""
  t, n = emb_t.astype(jnp.float32), emb_n.astype(jnp.float32)
  cos = jnp.sum(t * n, -1) / (jnp.linalg.norm(t, axis=-1) * jnp.linalg.norm(n, axis=-1) + eps)
  return jnp.mean(1.0 - cos)


def landmark_loss(lm_t: jax.Array, lm_n: jax.Array,
                  contour: Sequence[int] = CONTOUR) -> jax.Array:
  """Eq. 8: squared difference of the contour landmarks (B, 68, 2) of I_t and I_n."""
  idx = jnp.asarray(contour)
  return jnp.mean(_mse_per_sample(lm_t[:, idx], lm_n[:, idx]))


def expression_loss(emb_o: jax.Array, emb_n: jax.Array, normalize: bool = True) -> jax.Array:
  """Eq. 9: squared difference of the expression embeddings of I_o and I_n.

  `normalize` (embeddings): on the unit sphere, mean over the D dimensions, so a pair
  contributes (2 - 2 cos) / D. Without it (AU intensities, whose length is the
  expression's strength): the plain mean squared difference.
  """
  if normalize:
    emb_o, emb_n = _unit(emb_o), _unit(emb_n)
  return jnp.mean(_mse_per_sample(emb_o, emb_n))


def eyebrow_loss(brows_o: jax.Array, brows_n: jax.Array) -> jax.Array:
  """Eq. 10: squared difference of the eyebrow expression channels of I_o and I_n."""
  return jnp.mean(_mse_per_sample(brows_o, brows_n))


def weighted_total(components: Mapping[str, jax.Array], weights: Mapping[str, float]) -> jax.Array:
  """Eq. 3: L_adv + sum_k lambda_k L_k over the components present.

  `weights` maps `lambda_rec`... to values (config.loss); a component whose weight
  is missing raises, so a typo cannot silently drop a loss.
  """
  total = jnp.zeros((), jnp.float32)
  for name, value in components.items():
    key = WEIGHTS[name]
    if key is None:
      total = total + value
    else:
      if key not in weights:
        raise KeyError(f"loss weight {key!r} missing from config.loss ({sorted(weights)})")
      total = total + float(weights[key]) * value
  return total
