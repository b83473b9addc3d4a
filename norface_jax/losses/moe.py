"""Router auxiliary losses of Norface's classifier (Eq. 12, 13): pure jnp functions.

Shape letters: T tokens (any leading dims are flattened), E experts.
All logs are natural; 0 * log 0 is taken as 0 (with a zero, finite gradient).
"""

import jax
import jax.numpy as jnp


def _flat(x_te: jax.Array) -> jax.Array:
  return x_te.reshape(-1, x_te.shape[-1]).astype(jnp.float32)


def entropy(p: jax.Array, axis: int = -1) -> jax.Array:
  """H(p) = -sum_e p_e log p_e, safe (finite value and gradient) at p_e = 0."""
  safe_log = jnp.log(jnp.where(p > 0, p, 1.0))
  return -jnp.sum(p * safe_log, axis=axis)


def importance_loss(gates_te: jax.Array) -> jax.Array:
  """L_imp = (std_e(I) / mean_e(I))^2 with I_e = sum_t G_e(x_t).

  The squared coefficient of variation of the per-expert gate sums over the
  batch; std is the population std (ddof=0).
  """
  imp_e = jnp.sum(_flat(gates_te), axis=0)
  mean = jnp.mean(imp_e)
  return jnp.var(imp_e) / jnp.maximum(mean * mean, 1e-20)


def global_entropy_loss(probs_te: jax.Array) -> jax.Array:
  """L_global = -H(p~), p~ = (1/T) sum_t p(E|x_t): rewards wide expert use."""
  return -entropy(jnp.mean(_flat(probs_te), axis=0))


def local_entropy_loss(probs_te: jax.Array) -> jax.Array:
  """L_local = (1/T) sum_t H(p(E|x_t)): rewards confident per-token routing."""
  return jnp.mean(entropy(_flat(probs_te)))
