"""Identity normalization with a trained F_nor: a jit-able function and a dataset writer.

- `make_normalize_fn(generator, params, target_image)` -> `fn(images_o_uint8) ->
  images_n_uint8`: pure, jit-able; stage 2's `online` mode calls it inside its step.
- `normalize_source(source, fn, out_dir, ...)` normalizes a whole random-access source
  in batches sharded over the devices and writes the paired layout that stage 2's
  `precomputed` mode reads (`registry.PairedFolderSource`): `OUT/<item['path']>`.

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
from norface_jax.data import pipeline
from norface_jax.training import sharding


def normalize_apply(generator: Any, params: Any, target_u8: jax.Array,
                    images_u8: jax.Array) -> jax.Array:
  """I_n for a batch of uint8 faces onto one uint8 target face (B, S, S, 3) -> uint8."""
  x_o = images_u8.astype(jnp.float32) / 255.0
  x_t = jnp.broadcast_to(target_u8.astype(jnp.float32) / 255.0, x_o.shape)
  y = generator.apply({"params": params}, x_o, x_t, train=False)
  return jnp.clip(jnp.round(y * 255.0), 0, 255).astype(jnp.uint8)


def make_normalize_fn(generator: Any, params: Any, target_image: Any) -> Callable[[jax.Array], jax.Array]:
  """`fn(images_o_uint8) -> images_n_uint8` with the generator and target bound."""
  return functools.partial(normalize_apply, generator, params, jnp.asarray(target_image, jnp.uint8))


def relative_path(item: dict[str, Any], split: str) -> str:
  """Where an item's normalized face goes under OUT: `images.paired_relative_path`,
  the convention `registry.PairedFolderSource` reads (one definition, in the data layer)."""
  return images_lib.paired_relative_path(item, split)


def load_target(spec: str, data_config: Any) -> tuple[np.ndarray, int | None]:
  """(uint8 target face of the config's image size, SynthFACS subject or None).

  `spec`: an image path, or `synthfacs:<subject>` (preset index or name) for that
  subject's frontal neutral render on the plain background.
  """
  size = int(data_config.image_size)
  if spec.startswith("synthfacs:"):
    from norface_jax.data.synthfacs import generate
    from norface_jax.data.synthfacs import presets
    preset = presets.get(data_config.preset)
    name = spec.split(":", 1)[1]
    subject = int(name) if name.isdigit() else preset.subjects.index(name)
    out = generate.render_normalized(preset, data_config.get("seed", 0), subject,
                                     np.zeros((1, 17), np.float32), np.zeros((1,), np.float32),
                                     size, data_config.identity_bias)
    return np.asarray(out["image"][0], np.uint8), subject
  return images_lib.load_image(spec, size), None


def normalize_source(source: Any, normalize_fn: Callable[[jax.Array], jax.Array], out_dir: str, *,
                     split: str = "train", batch_size: int = 64, mesh: Any = None,
                     max_items: int = 0, log_every: int = 10) -> dict[str, float]:
  """Normalizes every item of `source` into `out_dir` (PNG); returns counts and images/s.

  The batch is sharded over the mesh's data axes (all devices by default); the last
  batch is padded and the padding dropped.
  """
  mesh = mesh if mesh is not None else sharding.make_mesh([("data", -1)])
  sharding.check_batch_size(batch_size, mesh)
  bs = sharding.batch_sharding(mesh)
  fn = jax.jit(normalize_fn, in_shardings=bs, out_shardings=bs)
  first = source[0]
  keys = ("image", "path") if "path" in first else ("image", "index")
  n_total = len(source) if not max_items else min(max_items, len(source))
  written, t0, t_first = 0, time.perf_counter(), None
  for b, batch in enumerate(pipeline.eval_batches(source, batch_size=batch_size, keys=keys)):
    valid = batch.pop("_valid").astype(bool)
    ids = batch.pop(keys[1])
    out = np.asarray(jax.device_get(fn(jax.device_put(batch["image"], bs))))
    if t_first is None:
      t_first = time.perf_counter()  # rates exclude the compile of the first batch
      first_count = int(valid.sum())
    for img, ident, ok in zip(out, ids, valid):
      if not ok or written >= n_total:
        continue
      rel = relative_path({keys[1]: ident}, split)
      path = os.path.join(out_dir, rel)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      Image.fromarray(img).save(path)
      written += 1
    if log_every and (b + 1) % log_every == 0:
      rate = (written - first_count) / max(time.perf_counter() - t_first, 1e-9)
      logging.info("normalized %d/%d (%.1f images/s)", written, n_total, rate)
    if written >= n_total:
      break
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
  from norface_jax.training import stage1
  config, generator, params, step = stage1.load_generator(checkpoint)
  target = target or config.target
  data = ml_collections.ConfigDict(dict(data_config if data_config is not None else config.data))
  data.normalization = "none"
  target_data = ml_collections.ConfigDict(dict(config.data))
  if data.get("synthetic", False) and target.startswith("synthfacs:"):
    target_data.preset = data.preset
  target_u8, _ = load_target(target, target_data)
  if data.image_size != config.data.image_size:
    raise ValueError(f"the dataset's image_size {data.image_size} differs from the generator's "
                     f"{config.data.image_size}")
  fn = make_normalize_fn(generator, params, target_u8)
  os.makedirs(out_dir, exist_ok=True)
  Image.fromarray(target_u8).save(os.path.join(out_dir, "_target.png"))
  logging.info("F_nor of step %d from %s; target %s.", step, checkpoint, target)
  return {split: normalize_source(registry.make_source(data, split, task="au_intensity"), fn,
                                  out_dir, split=split, batch_size=batch_size, max_items=max_items)
          for split in splits}
