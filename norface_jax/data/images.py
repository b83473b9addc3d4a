"""Reading face images from disk (PIL), with errors that name the file."""

from __future__ import annotations

import numpy as np
from PIL import Image


def load_image(path: str, size: int | None = None) -> np.ndarray:
  """RGB uint8 (size, size, 3) (or native size); a missing or corrupt file raises naming it."""
  try:
    with Image.open(path) as im:
      im = im.convert("RGB")
      if size is not None and im.size != (size, size):
        im = im.resize((size, size), Image.BILINEAR)
      return np.asarray(im, np.uint8)
  except FileNotFoundError:
    raise FileNotFoundError(f"image not found: {path}") from None
  except (OSError, ValueError) as e:
    raise ValueError(f"cannot read image {path}: {e}") from e


def paired_relative_path(item: dict, split: str) -> str:
  """Where an item's normalized face lives under a `precomputed` folder.

  Items read from disk carry their relative `path`, mirrored as is; in-memory items
  (SynthFACS) have none and use `synthfacs/<split>/<index:06d>.png`, where `index` is
  the item's position in that split's source. `launch/normalize.py` writes this layout.
  """
  if "path" in item:
    return str(item["path"])
  return f"synthfacs/{split}/{int(item['index']):06d}.png"


# MAE/ImageNet statistics: the ViT encoders are pre-trained with them.
IMAGE_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGE_STD = np.array([0.229, 0.224, 0.225], np.float32)


def standardize(images_u8, dtype):
  """uint8 (B, H, W, 3) -> (x / 255 - mean) / std in the compute dtype (jit-able)."""
  import jax.numpy as jnp
  x = images_u8.astype(jnp.float32) / 255.0
  return ((x - IMAGE_MEAN) / IMAGE_STD).astype(dtype)


def load_target(spec: str, data_config) -> tuple[np.ndarray, int | None]:
  """(uint8 target face at the config's image size, SynthFACS subject or None).

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
  return load_image(spec, size), None
