"""Sharding hints on activations: logical axis names on intermediate arrays (MaxText style).

Parameters carry logical names (`embed`, `mlp`, `heads`, ...) that the config's rules map
to mesh axes. Activations get names of their own, so that an `fsdp` mesh axis can shard
the embedding of the *parameters* while the activations stay split over the batch:

  act_batch    the batch (or token) axis        -> ("data", "fsdp") by default
  act_len      the token axis of a sequence     -> None
  act_embed    the model width D                -> None
  act_heads    attention heads                  -> "model" (tensor parallel)
  act_kv       the head width                   -> None
  act_mlp      the MLP's hidden width           -> "model"
  act_experts  the MoE's expert axis            -> "expert"

`constrain(x, names)` is a no-op unless a step is being traced inside `rules(mesh,
logical_axis_rules)`; the training loop traces every train step that way
(`loop.jit_train_step`), so the models need no mesh of their own and the same code runs
unsharded in tests, inference and export.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
from jax.sharding import NamedSharding, PartitionSpec

_ACTIVE: contextvars.ContextVar = contextvars.ContextVar("activation_sharding", default=None)


@contextlib.contextmanager
def rules(mesh, logical_axis_rules: Sequence[tuple[str, Any]]):
  """Within this context `constrain` pins activations to `mesh` per the rules."""
  token = _ACTIVE.set((mesh, tuple(tuple(r) for r in logical_axis_rules)))
  try:
    yield
  finally:
    _ACTIVE.reset(token)


def traced_with_rules(fn: Callable, mesh, logical_axis_rules) -> Callable:
  """`fn` whose body runs inside `rules(...)`: wrap a step before `jax.jit` so the
  constraints are in place when it is traced."""

  @functools.wraps(fn)
  def wrapped(*args, **kwargs):
    with rules(mesh, logical_axis_rules):
      return fn(*args, **kwargs)

  return wrapped


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
  """`x` with its sharding pinned to the mesh axes the active rules give `names`."""
  active = _ACTIVE.get()
  if active is None:
    return x
  mesh, logical_axis_rules = active
  if len(names) != x.ndim:
    raise ValueError(f"activation of shape {x.shape} given {len(names)} axis names {names}")
  spec = list(nn.logical_to_mesh_axes(tuple(names), logical_axis_rules))
  spec += [None] * (x.ndim - len(spec))
  for i, axes in enumerate(spec):  # An axis the mesh does not divide stays unsharded.
    if x.shape[i] % _mesh_size(mesh, axes):
      spec[i] = None
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, PartitionSpec(*spec)))


def _mesh_size(mesh, axes) -> int:
  """How many shards the mesh axes `axes` (None, a name or a tuple of names) make."""
  names = () if axes is None else (axes if isinstance(axes, tuple) else (axes,))
  return math.prod(mesh.shape[a] for a in names)
