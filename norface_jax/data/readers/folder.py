"""A user's own labelled photos: a manifest CSV (`--dataset=folder --manifest=M.csv`).

The manifest has a header row. Columns:
- `path` (required): the image, relative to the manifest's folder (or absolute);
- `subject` (required): who is in it (folds never split a subject);
- labels, one kind: `emotion` (a name of labels.EMOTIONS, any case, or its index), or
  AU columns `AU<N>` / `AU<N>_c` (occurrence 0/1) with optional `AU<N>_r` (intensity
  0..5; occurrence is then intensity >= 2 where no `_c` column is given);
- optional: `gender` (female/f/1, male/m/0), `skin` (Fitzpatrick 1..6, grouped as the
  DeepFN paper does), `x`, `y`, `w`, `h` (the face box; without it the face is found
  by the detector when the dataset is prepared), `session`, `frame`.

Folds are subject-exclusive: `num_folds=0` gives leave-one-subject-out (one part per
subject), `num_folds=K` K seeded random parts. Splits are `part1..partK` for every task.
Bad rows (missing file, unknown label, wrong column count) are reported by file and line.
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np

from norface_jax.data import labels
from norface_jax.data.images import load_image
from norface_jax.data.readers import common

_AU = re.compile(r"^au(\d+)(_[cr])?$", re.IGNORECASE)
_GENDER = {"female": 1, "f": 1, "1": 1, "male": 0, "m": 0, "0": 0, "": -1}
BOX = ("x", "y", "w", "h")


def label_columns(header: list[str], source: str = "") -> dict[str, object]:
  """What the header says: kind ('emotion' | 'au'), the detection AUs (with their `_c`
  or plain columns) and the intensity AUs (`_r` columns)."""
  cols = {c.strip().lower(): i for i, c in enumerate(header)}
  for need in ("path", "subject"):
    if need not in cols:
      raise common.BadInputError(source, 1, f"the header has no {need!r} column: {header}")
  occ, inten = {}, {}
  for i, c in enumerate(header):
    m = _AU.match(c.strip())
    if m:
      (inten if m.group(2) and m.group(2).lower() == "_r" else occ)[int(m.group(1))] = i
  if "emotion" in cols and (occ or inten):
    raise common.BadInputError(source, 1, "both an emotion column and AU columns: one kind of "
                                          "label per manifest")
  if "emotion" not in cols and not (occ or inten):
    raise common.BadInputError(source, 1, "no label column: expected 'emotion' or AU columns "
                                          "such as AU1, AU12_c, AU12_r")
  box = [c for c in BOX if c in cols]
  if box and len(box) != 4:
    raise common.BadInputError(source, 1, f"face box columns {box}: give all of x, y, w, h")
  if "emotion" in cols:
    return {"kind": "emotion", "columns": cols, "aus": (), "intensity_aus": (),
            "occ": {}, "inten": {}}
  aus = tuple(sorted(set(occ) | set(inten)))
  return {"kind": "au", "columns": cols, "aus": aus, "intensity_aus": tuple(sorted(inten)),
          "occ": occ, "inten": inten}


def _emotion(value: str) -> int | None:
  v = value.strip()
  if v.lstrip("-").isdigit():
    i = int(v)
    return i if 0 <= i < len(labels.EMOTIONS) else None
  names = {e.lower(): i for i, e in enumerate(labels.EMOTIONS)}
  return names.get(v.lower())


def read(root: str, problems: common.Problems, *, manifest: str = "", num_folds: int = 0,
         fold_seed: int = 0, face_finder: Any = None) -> common.Records:
  """The examples of `manifest` (default `<root>/manifest.csv`) in subject-exclusive parts.

  Rows without a face box get the 5 landmarks of the best face `face_finder(images)`
  finds (`detection.crops.FaceFinder`), before the folds are made, so a photo without a
  face is a bad row like any other (without a finder, such photos are cut from their
  centre square).
  """
  path = manifest or os.path.join(root, "manifest.csv")
  common.require_file(path, "a manifest CSV with columns path, subject and labels")
  base = os.path.dirname(os.path.abspath(path))
  rows = common.read_rows(path, problems, header=True)
  _, header = next(rows, (0, None))
  if header is None:
    raise common.BadInputError(path, 0, "empty manifest")
  spec = label_columns(header, path)
  cols = spec["columns"]
  get = lambda row, name, default="": row[cols[name]].strip() if name in cols else default  # noqa: E731
  examples: list[common.Example] = []
  attributes: dict[str, dict[str, int]] = {}
  for line, row in rows:
    rel = get(row, "path")
    subject = get(row, "subject")
    if not rel or not subject:
      problems.bad_input(path, line, "empty path or subject")
      continue
    image_path = rel if os.path.isabs(rel) else os.path.join(base, rel)
    if not os.path.isfile(image_path):
      problems.bad_input(path, line, f"image {image_path} not found")
      continue
    ex = common.Example(path=rel, image_path=image_path, subject=subject,
                        session=get(row, "session"), source=path, line=line)
    if "frame" in cols:
      frame = common.parse_int(get(row, "frame"), path, line, "frame", problems)
      if frame is None:
        continue
      ex.frame = frame
    if spec["kind"] == "emotion":
      e = _emotion(get(row, "emotion"))
      if e is None:
        problems.bad_input(path, line, f"unknown emotion {get(row, 'emotion')!r}; known: "
                                       f"{', '.join(labels.EMOTIONS)} (or their index)")
        continue
      ex.emotion = e
    else:
      try:
        inten = {a: float(row[i]) for a, i in spec["inten"].items()}
        occ = {a: float(row[i]) for a, i in spec["occ"].items()}
      except ValueError:
        problems.bad_input(path, line, "an AU value is not a number")
        continue
      if any(v not in (0.0, 1.0) for v in occ.values()) or any(
          not 0.0 <= v <= 5.0 for v in inten.values()):
        problems.bad_input(path, line, "AU occurrence must be 0 or 1 and intensity 0..5")
        continue
      ex.au = np.array([occ.get(a, float(inten.get(a, 0.0) >= 2.0)) for a in spec["aus"]],
                       np.float32)
      ex.au_intensity = np.array([inten[a] for a in spec["intensity_aus"]], np.float32)
    box = [get(row, c) for c in BOX if c in cols]
    if any(box):  # All four empty: no box, the detector finds the face.
      try:
        ex.box = tuple(float(v) for v in box)
      except ValueError:
        problems.bad_input(path, line, f"face box x, y, w, h must be numbers (or all empty): {box}")
        continue
    gender = get(row, "gender").lower()
    if gender not in _GENDER:
      problems.bad_input(path, line, f"gender {gender!r}; expected female/f/1, male/m/0 or empty")
      continue
    skin = get(row, "skin")
    a = attributes.setdefault(subject, {})
    if _GENDER[gender] >= 0:
      a["gender"] = _GENDER[gender]
    if skin:
      fitz = common.parse_int(skin, path, line, "skin (Fitzpatrick 1..6)", problems)
      if fitz is None:
        continue
      a["skin"] = common.skin_group(fitz)
    if ex.box is None and face_finder is not None:
      try:
        found = face_finder([load_image(image_path)])[0]
      except (ValueError, OSError) as e:
        problems.bad_input(path, line, str(e))
        continue
      if not found:
        problems.bad_input(path, line, f"no face found in {image_path}")
        continue
      ex.landmarks = found[0].landmarks
    examples.append(ex)
  subjects = sorted({ex.subject for ex in examples})
  if not subjects:
    raise common.BadInputError(path, 0, "no usable row")
  if num_folds == 0:
    parts = [[s] for s in subjects]
    source = f"leave-one-subject-out over {path}"
  else:
    parts = common.seeded_folds(subjects, num_folds, fold_seed)
    source = f"{num_folds} subject-exclusive folds of {path}, seed {fold_seed}"
  part_of = {s: k for k, part in enumerate(parts) for s in part}
  splits: dict[str, list[common.Example]] = {f"part{k + 1}": [] for k in range(len(parts))}
  for ex in examples:
    splits[f"part{part_of[ex.subject] + 1}"].append(ex)
  folds = common.FoldParts(parts, source, list(range(1, len(parts) + 1)))
  info = {"labels": spec["kind"], "manifest": os.path.abspath(path),
          "aus": list(spec["aus"]), "intensity_aus": list(spec["intensity_aus"])}
  return common.Records(splits=splits, folds=folds,
                        attributes={s: a for s, a in attributes.items() if a}, info=info)
