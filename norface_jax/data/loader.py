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


class GlobalBatchSampler:
  """Shuffled epochs cut into global batches; each process reads its slice of each.

  Local record `i` of process `p` is global position
  `g = (i // local) * global_batch + p * local + i % local` of the endless sequence of
  per-epoch permutations. So the global batch at every step is the same whatever the
  number of processes (one host with 8 devices, or 2 hosts with 4: tested), and the
  Grain iterator state (the last local index) is all a checkpoint needs.
  """

  def __init__(self, num_records: int, global_batch: int, *, seed: int,
               process_index: int = 0, process_count: int = 1, num_epochs: int | None = None):
    if num_records <= 0:
      raise ValueError("empty training split: no records to sample")
    if global_batch % process_count:
      raise ValueError(f"global batch {global_batch} not divisible by {process_count} processes")
    self.num_records, self.global_batch, self.seed = num_records, global_batch, seed
    self.process_index, self.process_count = process_index, process_count
    self.local = global_batch // process_count
    self.num_epochs = num_epochs
    self._perm_epoch, self._perm = -1, None

  def _permutation(self, epoch: int) -> np.ndarray:
    if epoch != self._perm_epoch:
      self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_records)
      self._perm_epoch = epoch
    return self._perm

  def __repr__(self) -> str:  # Grain checks it on restore: keep it stable.
    return (f"GlobalBatchSampler(num_records={self.num_records}, global_batch={self.global_batch}, "
            f"seed={self.seed}, process={self.process_index}/{self.process_count}, "
            f"num_epochs={self.num_epochs})")

  def global_position(self, index: int) -> int:
    return ((index // self.local) * self.global_batch + self.process_index * self.local
            + index % self.local)

  def __getitem__(self, index: int) -> grain.RecordMetadata:
    if index < 0:
      raise IndexError(index)
    epoch, pos = divmod(self.global_position(index), self.num_records)
    if self.num_epochs is not None and epoch >= self.num_epochs:
      raise IndexError(f"sampler exhausted after {self.num_epochs} epochs")
    return grain.RecordMetadata(index=index, record_key=int(self._permutation(epoch)[pos]))


def train_loader(source: Any, *, batch_size: int, seed: int, keys: Sequence[str],
                 worker_count: int = 0, prefetch: int = 2) -> grain.DataLoader:
  """Endless shuffled loader of per-process batches (`batch_size` is the global batch)."""
  count = jax.process_count()
  sampler = GlobalBatchSampler(len(source), batch_size, seed=seed,
                               process_index=jax.process_index(), process_count=count)
  return grain.DataLoader(
      data_source=source, sampler=sampler, shard_options=grain.sharding.NoSharding(),
      operations=[SelectKeys(tuple(keys)),
                  grain.transforms.Batch(batch_size // count, drop_remainder=True)],
      worker_count=worker_count, worker_buffer_size=prefetch)


def eval_batches(source: Any, *, batch_size: int, keys: Sequence[str],
                 max_examples: int = 0) -> Iterator[dict[str, np.ndarray]]:
  """One in-order pass; each process reads an equal contiguous slice, padded.

  `batch_size` is global. Every process yields the same number of per-process batches
  (padding rows repeat a real item and have `_valid` = 0), so the jitted evaluation
  step sees one shape and all processes take part in every call.
  """
  count, index = jax.process_count(), jax.process_index()
  if batch_size % count:
    raise ValueError(f"eval batch {batch_size} not divisible by {count} processes")
  n = len(source) if not max_examples else min(len(source), max_examples)
  if n == 0:
    raise ValueError("empty evaluation split: no records to evaluate")
  per_process = -(-n // count)
  local = batch_size // count
  lo, hi = index * per_process, min((index + 1) * per_process, n)
  dataset = grain.MapDataset.source(source).map(SelectKeys(tuple(keys)))
  for b in range(-(-per_process // local)):
    rows = list(range(lo + b * local, min(lo + (b + 1) * local, hi)))
    items = [dataset[i] for i in rows] or [dataset[0]]
    valid = np.zeros((local,), np.float32)
    valid[:len(rows)] = 1.0
    items += [items[-1]] * (local - len(items))
    batch = {k: np.stack([it[k] for it in items]) for k in keys}
    batch["_valid"] = valid
    yield batch
