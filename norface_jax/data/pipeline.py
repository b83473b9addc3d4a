"""Grain loaders: per-process sharding, shuffling, batching, worker processes.

The host side only gathers and batches uint8 images and labels; augmentation runs on
the accelerator inside the jitted step (`norface_jax.data.augment`), so the input
pipeline stays cheap. The training iterator is a `grain.DataLoader` iterator, whose
state is saved in every checkpoint (exact resume of the data order).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Sequence

import grain
import jax
import numpy as np


@dataclasses.dataclass(frozen=True)
class SelectKeys(grain.transforms.Map):
  """Keeps the keys a step needs (drops strings and unused ground truth)."""
  keys: tuple[str, ...]

  def map(self, item: dict[str, Any]) -> dict[str, Any]:
    missing = [k for k in self.keys if k not in item]
    if missing:
      raise KeyError(f"data item lacks {missing}; it has {sorted(item)}")
    return {k: item[k] for k in self.keys}


def shard_options(shard: bool = True) -> grain.sharding.ShardOptions:
  """One shard per JAX process (multi-host), or everything (evaluation on one host)."""
  if shard and jax.process_count() > 1:
    return grain.sharding.ShardByJaxProcess(drop_remainder=True)
  return grain.sharding.NoSharding()


def train_loader(source: Any, *, batch_size: int, seed: int, keys: Sequence[str],
                 worker_count: int = 0, prefetch: int = 2) -> grain.DataLoader:
  """Endless shuffled loader of per-process batches (`batch_size` is per process)."""
  sampler = grain.samplers.IndexSampler(
      num_records=len(source), shard_options=shard_options(True), shuffle=True,
      num_epochs=None, seed=seed)
  return grain.DataLoader(
      data_source=source, sampler=sampler,
      operations=[SelectKeys(tuple(keys)), grain.transforms.Batch(batch_size, drop_remainder=True)],
      worker_count=worker_count, worker_buffer_size=prefetch)


def eval_batches(source: Any, *, batch_size: int, keys: Sequence[str],
                 shard: bool = True) -> Iterator[dict[str, np.ndarray]]:
  """One pass in order, padded to full batches; `_valid` marks real rows.

  Padding keeps one compiled shape for the evaluation step.
  """
  sampler = grain.samplers.IndexSampler(
      num_records=len(source), shard_options=shard_options(shard), shuffle=False,
      num_epochs=1, seed=0)
  loader = grain.DataLoader(
      data_source=source, sampler=sampler,
      operations=[SelectKeys(tuple(keys)), grain.transforms.Batch(batch_size, drop_remainder=False)],
      worker_count=0)
  for batch in loader:
    n = len(next(iter(batch.values())))
    valid = np.zeros((batch_size,), np.float32)
    valid[:n] = 1.0
    if n < batch_size:
      batch = {k: np.concatenate([v, np.repeat(v[-1:], batch_size - n, axis=0)]) for k, v in batch.items()}
    batch["_valid"] = valid
    yield batch
