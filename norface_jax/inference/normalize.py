"""Identity normalization of a dataset with a trained F_nor (`launch/normalize.py`).

- `make_normalize_fn(generator, params, target_image)` -> `fn(images_o_uint8) ->
  images_n_uint8`: pure, jit-able (`models.normalizer.normalize_uint8` with the
  generator and target bound).
- `normalize_source(source, fn, out_dir, ...)` normalizes a whole random-access source
  in batches sharded over the devices and writes the paired layout that stage 2's
  `precomputed` mode reads (`registry.PairedFolderSource`): `OUT/<item['path']>`.
  With several processes, each writes the items of its own slice.

Items without a `path` (SynthFACS in memory) are written to
`OUT/<relative_path(item, split)>` = `OUT/synthfacs/<split>/<index:06d>.png`, where
`index` is the item's `index` field (its position in that split's source): the
convention a reader of pathless items must follow (`relative_path`).
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from PIL import Image

from norface_jax.data import images as images_lib
from norface_jax.data import loader as data_loader
from norface_jax.models import normalizer as normalizer_lib
from norface_jax.training import sharding, stage1


def make_normalize_fn(generator: Any, params: Any, target_image: Any) -> Callable[[jax.Array], jax.Array]:
  """`fn(images_o_uint8) -> images_n_uint8` with the generator and target bound."""
  return functools.partial(normalizer_lib.normalize_uint8, generator, params,
                           jnp.asarray(target_image, jnp.uint8))


def relative_path(item: dict[str, Any], split: str) -> str:
  """Where an item's normalized face goes under OUT: `images.paired_relative_path`,
  the convention `registry.PairedFolderSource` reads (one definition, in the data layer)."""
  return images_lib.paired_relative_path(item, split)


def normalize_source(source: Any, normalize_fn: Callable[[jax.Array], jax.Array], out_dir: str, *,
                     split: str = "train", batch_size: int = 64, mesh: Any = None,
                     max_items: int = 0, log_every: int = 10) -> dict[str, float]:
  """Normalizes every item of `source` into `out_dir` (PNG); returns counts and images/s.

  The batch is sharded over the mesh's data axes (all devices by default); the last
  batch is padded and the padding dropped. `written` counts this process's images.
  """
  mesh = mesh if mesh is not None else sharding.make_mesh([("data", -1)])
  sharding.check_batch_size(batch_size, mesh)
  bs = sharding.batch_sharding(mesh)
  fn = jax.jit(normalize_fn, in_shardings=bs, out_shardings=bs)

  def local(a: jax.Array) -> np.ndarray:
    """This process's rows of a batch-sharded global array, in order (each row once)."""
    rows = {s.index[0].start or 0: s.data for s in a.addressable_shards}
    return np.concatenate([np.asarray(rows[k]) for k in sorted(rows)])

  first = source[0]
  keys = ("image", "path") if "path" in first else ("image", "index")
  n_total = len(source) if not max_items else min(max_items, len(source))
  written, t0, t_first = 0, time.perf_counter(), None
  # Every process runs the same number of batches (eval_batches pads), each writing its own.
  for b, batch in enumerate(data_loader.eval_batches(source, batch_size=batch_size, keys=keys,
                                                      max_examples=n_total)):
    valid = batch.pop("_valid").astype(bool)
    ids = batch.pop(keys[1])
    out = local(fn(jax.make_array_from_process_local_data(bs, batch["image"])))
    if t_first is None:
      t_first = time.perf_counter()  # rates exclude the compile of the first batch
      first_count = int(valid.sum())
    for img, ident, ok in zip(out, ids, valid):
      if not ok:
        continue
      rel = relative_path({keys[1]: ident}, split)
      path = os.path.join(out_dir, rel)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      Image.fromarray(img).save(path)
      written += 1
    if log_every and (b + 1) % log_every == 0:
      rate = (written - first_count) / max(time.perf_counter() - t_first, 1e-9)
      logging.info("normalized %d/%d (%.1f images/s)", written, n_total, rate)
  elapsed = time.perf_counter() - t0
  steady = (written - first_count) / max(time.perf_counter() - t_first, 1e-9) if written > first_count else 0.0
  logging.info("normalized %d images into %s in %.1fs (%.1f images/s after compile)",
               written, out_dir, elapsed, steady)
  return {"written": float(written), "seconds": elapsed, "images_per_sec": steady}


def normalize_dataset(checkpoint: str, target: str | None, out_dir: str, *, data_config: Any = None,
                      splits=("train", "test"), batch_size: int = 64,
                      max_items: int = 0) -> dict[str, dict[str, float]]:
  """`launch/normalize.py`: every split of a dataset through a stage-1 workdir's F_nor.

  `target` None: the fixed target face of the stage-1 config (`config.target`).
  """
  import ml_collections
  from norface_jax.data import registry
  config, generator, params, step = stage1.load_generator(checkpoint)
  target = target or config.target
  data = ml_collections.ConfigDict(dict(data_config if data_config is not None else config.data))
  data.normalization = "none"
  data.val_share = 0.0  # Every face of the split, the validation subjects' too.
  target_data = ml_collections.ConfigDict(dict(config.data))
  if data.get("synthetic", False) and target.startswith("synthfacs:"):
    target_data.preset = data.preset
  target_u8, _ = images_lib.load_target(target, target_data)
  if data.image_size != config.data.image_size:
    raise ValueError(f"the dataset's image_size {data.image_size} differs from the generator's "
                     f"{config.data.image_size}")
  fn = make_normalize_fn(generator, params, target_u8)
  os.makedirs(out_dir, exist_ok=True)
  if jax.process_index() == 0:
    Image.fromarray(target_u8).save(os.path.join(out_dir, "_target.png"))
  logging.info("F_nor of step %d from %s; target %s.", step, checkpoint, target)
  return {split: normalize_source(registry.make_source(data, split, task="au_intensity"), fn,
                                  out_dir, split=split, batch_size=batch_size, max_items=max_items)
          for split in splits}
