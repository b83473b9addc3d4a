"""Input-pipeline throughput: prepared data -> Grain loader (+ augmentation), images/s.

  python -m norface_jax.benchmark.loader --dataset=affectnet --data_dir=DIR --workers=0,1,2

Without --data_dir it writes a SynthFACS fixture in the dataset's raw layout at
`--size`, prepares it in a temporary folder and reads that. For each worker count it
times `data.loader.train_loader` batches (JPEG decode + resize on the host) and the same
batches through the jitted augmentation of the trainer (flip, random resized crop,
colour jitter) on the default JAX device.
"""

from __future__ import annotations

import tempfile
import time

from absl import app, flags
import jax
import numpy as np

from norface_jax.data import augment, loader as data_loader, prepared
from norface_jax.data.synthfacs import writer

_DATASET = flags.DEFINE_enum("dataset", "affectnet", list(prepared.DATASETS), "Dataset.")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "Prepared data (empty: a SynthFACS fixture).")
_SIZE = flags.DEFINE_integer("size", 224, "Image side.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Batch size.")
_BATCHES = flags.DEFINE_integer("batches", 20, "Timed batches (after 2 warm-up).")
_WORKERS = flags.DEFINE_list("workers", ["0", "1", "2"], "Grain worker counts to time.")
_SUBJECTS = flags.DEFINE_integer("subjects", 64, "Fixture identities.")


def time_loader(source, workers: int, batch: int, batches: int, aug_fn=None) -> float:
  """Images/s over `batches` batches after two warm-up batches."""
  loader = data_loader.train_loader(source, batch_size=batch, seed=0, keys=("image",),
                                 worker_count=workers, prefetch=2)
  it = iter(loader)
  rng = jax.random.PRNGKey(0)
  for _ in range(2):
    x = next(it)["image"]
    if aug_fn is not None:
      jax.block_until_ready(aug_fn(rng, x))
  t = time.perf_counter()
  for i in range(batches):
    x = next(it)["image"]
    if aug_fn is not None:
      jax.block_until_ready(aug_fn(jax.random.fold_in(rng, i), x))
  return batches * batch / (time.perf_counter() - t)


def main(argv):
  del argv
  data_dir = _DATA_DIR.value
  if not data_dir:
    data_dir = tempfile.mkdtemp(prefix="bench_loader_")
    raw = f"{data_dir}/raw"
    writer.write(_DATASET.value, raw, subjects=_SUBJECTS.value, frames=4, size=_SIZE.value)
    prepared.prepare(_DATASET.value, raw, data_dir,
                     prepared.PrepareOptions(image_size=_SIZE.value))
  source = prepared.source(data_dir, _DATASET.value, "train", 0, _SIZE.value)
  cfg = dict(flip=True, crop_scale=(0.8, 1.0), color_jitter=0.2)

  @jax.jit
  def aug(rng, x):
    return augment.augment_batch(rng, x.astype(np.float32) / 255.0, None, cfg)[0]

  print(f"{_DATASET.value}: {len(source)} train items at {_SIZE.value} px, batch {_BATCH.value}, "
        f"{jax.devices()[0].platform}")
  print("| workers | loader images/s | loader + augmentation images/s |")
  print("| --- | --- | --- |")
  for w in (int(v) for v in _WORKERS.value):
    plain = time_loader(source, w, _BATCH.value, _BATCHES.value)
    with_aug = time_loader(source, w, _BATCH.value, _BATCHES.value, aug)
    print(f"| {w} | {plain:.0f} | {with_aug:.0f} |")


if __name__ == "__main__":
  app.run(main)
