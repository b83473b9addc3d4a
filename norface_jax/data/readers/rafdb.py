"""The RAF-DB reader: basic-emotion partition list + aligned or original images.

Layout (FORMATS.md): `EmoLabel/list_patition_label.txt` lines `train_00001.jpg 5`,
labels 1..7 = Surprise, Fear, Disgust, Happiness, Sadness, Anger, Neutral (mapped to
the canonical order of labels.py); images `Image/aligned/<stem>_aligned.jpg` (100x100)
or `Image/original/<name>`. When `Annotation/manual/<stem>_manu_attri.txt` exists
(5 landmark lines `x y`, then gender 0 male / 1 female / 2 unsure), the 5 points are
kept (for aligning original images) and gender becomes a group attribute.
"""

from __future__ import annotations

import os

import numpy as np

from norface_jax.data import labels
from norface_jax.data.readers import common

LIST = os.path.join("EmoLabel", "list_patition_label.txt")
VARIANTS = ("aligned", "original")


def image_rel(name: str, variant: str) -> str:
  stem = os.path.splitext(name)[0]
  if variant == "aligned":
    return f"Image/aligned/{stem}_aligned.jpg"
  return f"Image/original/{name}"


def _attributes(root: str, stem: str) -> tuple[np.ndarray | None, int]:
  path = os.path.join(root, "Annotation", "manual", f"{stem}_manu_attri.txt")
  if not os.path.isfile(path):
    return None, -1
  rows = [ln.split() for ln in open(path) if ln.strip()]
  try:
    lm5 = np.array([[float(x), float(y)] for x, y in rows[:5]], np.float32)
    gender = int(rows[5][0])
  except (ValueError, IndexError):
    raise common.BadInputError(path, 0, "expected 5 landmark lines 'x y' then gender") from None
  return lm5, gender if gender in (0, 1) else -1


def read(root: str, problems: common.Problems, *, variant: str = "aligned") -> common.Records:
  """Train and test examples of one image variant (aligned or original)."""
  if variant not in VARIANTS:
    raise ValueError(f"RAF-DB variant {variant!r}; expected one of {VARIANTS}")
  path = os.path.join(root, LIST)
  common.require_file(path, "lines '<name>.jpg <label 1..7>'")
  splits: dict[str, list[common.Example]] = {"train": [], "test": []}
  attributes: dict[str, dict[str, int]] = {}
  for line, (name, label) in common.read_rows(path, problems, columns=2, delimiter=" "):
    split = name.split("_", 1)[0]
    if split not in splits:
      problems.bad_input(path, line, f"name {name!r}; expected train_* or test_*")
      continue
    code = common.parse_int(label, path, line, "label", problems)
    if code is None:
      continue
    if code not in labels.RAFDB_CODES:
      problems.bad_input(path, line, f"label {code}; expected 1..7")
      continue
    stem = os.path.splitext(name)[0]
    lm5, gender = _attributes(root, stem)
    if gender >= 0:
      attributes[stem] = {"gender": gender}
    rel = image_rel(name, variant)
    splits[split].append(common.Example(
        path=rel, image_path=os.path.join(root, rel), subject=stem,
        emotion=labels.rafdb_to_canonical(code), landmarks=lm5 if variant == "original" else None,
        source=path, line=line))
  for split, examples in splits.items():
    if not examples:
      raise common.BadInputError(path, 0, f"empty split {split!r}: no {split}_* line")
  return common.Records(splits=splits, attributes=attributes,
                        info={"emotions": list(labels.EMOTIONS), "variant": variant})
