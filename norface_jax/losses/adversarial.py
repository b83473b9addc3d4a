"""Hinge adversarial losses (Lim & Ye 2017; Norface eq. 4) as pure functions.

Logits may be one array or a list of arrays (one per discriminator scale); a list
averages the per-scale losses.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

Logits = jax.Array | Sequence[jax.Array]


def _scales(x: Logits) -> list[jax.Array]:
  return [x] if isinstance(x, jax.Array) or hasattr(x, "shape") else list(x)


def hinge_d_loss(real_logits: Logits, fake_logits: Logits) -> jax.Array:
  """Discriminator: E[relu(1 - D(real))] + E[relu(1 + D(fake))]."""
  real, fake = _scales(real_logits), _scales(fake_logits)
  per = [jnp.mean(jax.nn.relu(1.0 - r.astype(jnp.float32)))
         + jnp.mean(jax.nn.relu(1.0 + f.astype(jnp.float32))) for r, f in zip(real, fake)]
  return sum(per) / len(per)


def hinge_g_loss(fake_logits: Logits) -> jax.Array:
  """Generator (L_adv of eq. 4): -E[D(fake)]."""
  fake = _scales(fake_logits)
  return sum(-jnp.mean(f.astype(jnp.float32)) for f in fake) / len(fake)
