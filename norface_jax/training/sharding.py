"""Device mesh, logical-axis rules and shardings (MaxText style).

Parameters carry logical axis names (`embed`, `mlp`, `heads`, `experts`, ...); the
config maps them to mesh axes with `logical_axis_rules`. The train state's shardings
come from `jax.eval_shape(init)` without allocating anything, and `jax.jit(init,
out_shardings=...)` then materialises every parameter directly in its shard.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
from jax.experimental import mesh_utils
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

# Mesh axes a batch is split over (all of them that exist and are data-like).
BATCH_AXES = ("data", "fsdp")


def make_mesh(mesh_config: Sequence[tuple[str, int]], devices: Sequence[Any] | None = None,
              dcn_config: Sequence[tuple[str, int]] | None = None) -> Mesh:
  """Builds a mesh from `[("data", -1), ("model", 1)]`; one -1 absorbs the rest.

  With `dcn_config` (same axis names, sizes across slices, e.g. `[("data", 2), ("fsdp",
  1), ("model", 1)]` for two TPU slices), the mesh is hybrid: `mesh_config` lays out
  the devices inside a slice (ICI) and `dcn_config` across slices (data-centre
  network), so the slow links carry only the data-parallel all-reduce.
  Raises a `ValueError` naming the config and the device count when they do not fit,
  before anything is compiled.
  """
  devices = list(jax.devices() if devices is None else devices)
  if dcn_config and any(int(s) != 1 for _, s in dcn_config):
    return _hybrid_mesh(mesh_config, dcn_config, devices)
  names = [str(n) for n, _ in mesh_config]
  sizes = [int(s) for _, s in mesh_config]
  if len(set(names)) != len(names):
    raise ValueError(f"config.mesh {mesh_config}: repeated axis name")
  if sizes.count(-1) > 1:
    raise ValueError(f"config.mesh {mesh_config}: at most one axis may be -1")
  fixed = math.prod(s for s in sizes if s != -1)
  if fixed <= 0 or len(devices) % fixed:
    raise ValueError(
        f"config.mesh {mesh_config} does not fit {len(devices)} devices "
        f"(fixed axes multiply to {fixed})")
  sizes = [len(devices) // fixed if s == -1 else s for s in sizes]
  if math.prod(sizes) != len(devices):
    raise ValueError(
        f"config.mesh {mesh_config} resolves to {dict(zip(names, sizes))} = "
        f"{math.prod(sizes)} devices, but {len(devices)} are present")
  try:
    device_array = mesh_utils.create_device_mesh(sizes, devices)
  except Exception:  # Non-TPU topologies or odd shapes: plain reshape.
    device_array = np.asarray(devices).reshape(sizes)
  return Mesh(device_array, tuple(names))


def _hybrid_mesh(ici_config, dcn_config, devices) -> Mesh:
  names = [str(n) for n, _ in ici_config]
  if [str(n) for n, _ in dcn_config] != names:
    raise ValueError(f"config.mesh_dcn {dcn_config} must name the axes of config.mesh {ici_config} "
                     "in the same order")
  dcn = [int(s) for _, s in dcn_config]
  slices = math.prod(dcn)
  if len(devices) % slices:
    raise ValueError(f"config.mesh_dcn {dcn_config} needs a multiple of {slices} devices, "
                     f"got {len(devices)}")
  per_slice = len(devices) // slices
  ici = [int(s) for _, s in ici_config]
  fixed = math.prod(s for s in ici if s != -1)
  ici = [per_slice // fixed if s == -1 else s for s in ici]
  if math.prod(ici) != per_slice:
    raise ValueError(f"config.mesh {ici_config} does not fit {per_slice} devices per slice")
  if not hasattr(devices[0], "slice_index"):
    raise ValueError(f"config.mesh_dcn {dcn_config}: these {devices[0].platform} devices have no "
                     "slice_index (hybrid meshes are for multi-slice TPU)")
  return Mesh(mesh_utils.create_hybrid_device_mesh(ici, dcn, devices), tuple(names))


def batch_axes(mesh: Mesh) -> tuple[str, ...]:
  """The mesh axes that split the batch dimension."""
  return tuple(a for a in BATCH_AXES if a in mesh.axis_names)


def data_parallel_size(mesh: Mesh) -> int:
  return math.prod(mesh.shape[a] for a in batch_axes(mesh))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading dimension split over the data axes, the rest replicated."""
  return NamedSharding(mesh, P(batch_axes(mesh)))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_batch_size(batch_size: int, mesh: Mesh, num_processes: int | None = None) -> int:
  """Validates the global batch against mesh and processes; returns the per-process batch."""
  num_processes = jax.process_count() if num_processes is None else num_processes
  dp = data_parallel_size(mesh)
  if batch_size % dp:
    raise ValueError(
        f"config.input.batch_size={batch_size} is not divisible by the data-parallel "
        f"mesh size {dp} (mesh {dict(mesh.shape)})")
  if batch_size % num_processes:
    raise ValueError(
        f"config.input.batch_size={batch_size} is not divisible by the "
        f"{num_processes} processes")
  return batch_size // num_processes


def logical_state_shardings(
    init_fn: Callable[..., Any], mesh: Mesh, rules: Sequence[tuple[str, Any]], *args: Any,
) -> tuple[Any, Any]:
  """Returns `(abstract_state, shardings)` of `init_fn(*args)` without running it.

  `init_fn` may return boxed (`nn.LogicallyPartitioned`) leaves; the abstract state is
  unboxed so that it matches what `jax.jit(unboxed(init_fn))` returns.
  """
  boxed = jax.eval_shape(init_fn, *args)
  logical = nn.get_partition_spec(boxed)
  shardings = nn.logical_to_mesh_sharding(logical, mesh, [tuple(r) for r in rules])
  return nn.unbox(boxed), shardings


def init_sharded(init_fn: Callable[..., Any], mesh: Mesh, rules, *args: Any) -> tuple[Any, Any]:
  """Initialises a state directly into its shardings; returns `(state, shardings)`."""
  _, shardings = logical_state_shardings(init_fn, mesh, rules, *args)
  state = jax.jit(lambda *a: nn.unbox(init_fn(*a)), out_shardings=shardings)(*args)
  return state, shardings


def host_to_global(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Per-process NumPy batch -> global arrays sharded over the data axes.

  Works for one process (the local batch is the global batch) and for many
  (`jax.make_array_from_process_local_data` stitches the processes' parts).
  """
  sharding = batch_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)


def mesh_rules(logical_axis_rules, mesh: Mesh) -> list[tuple[str, Any]]:
  """Logical-axis rules restricted to the axes this mesh has."""
  rules = []
  for logical, axes in logical_axis_rules:
    axes = axes if isinstance(axes, (tuple, list)) else (axes,)
    kept = tuple(a for a in axes if a in mesh.axis_names)
    rules.append((logical, kept if len(kept) > 1 else (kept[0] if kept else None)))
  return rules


def restore_target(abstract_state: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying their shardings: what Orbax restores a state into."""
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract_state, shardings)
