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
