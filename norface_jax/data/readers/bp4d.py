"""The BP4D and BP4D+ readers: raw frames + AU_OCC / AU_INT CSVs, or list files.

Raw layout (FORMATS.md): `<root>/<subject>/<task>/<frame>.jpg`;
`AU_OCC/<subject>_<task>.csv` (header: frame, then AU numbers; 0/1, 9 = unknown);
intensity (BP4D, FERA 2015) `AU_INT/AU<xx>/<subject>_<task>_AU<xx>.csv`, rows
`frame,intensity` (0..5, 9 = unknown). Frames with an unknown label are dropped and
counted. Intensity is optional: without `AU_INT/` the prepared items carry NaN
intensities and the metadata says so.

List variant (the literature's precomputed lists): `list_file` of relative image paths
(`F007/T1/643.jpg`) and `label_file` of 12 space-separated 0/1 per line.

Folds: BP4D's standard 3 subject-exclusive parts; BP4D+ 4 seeded random parts (or a
fold file), written beside the prepared data.
"""

from __future__ import annotations

import os

import numpy as np

from norface_jax.data import labels
from norface_jax.data.readers import common

BP4D_FOLDS = (
    "F001 M007 F018 F008 F002 M004 F010 F009 M012 M001 F016 M014 F023 M008",
    "M011 F003 M010 M002 F005 F022 M018 M017 F013 M016 F020 F011 M013 M005",
    "F007 F015 F006 F019 M006 M009 F012 M003 F004 F021 F017 M015 F014",
)
BP4D_SUBJECTS = frozenset(s for p in BP4D_FOLDS for s in p.split())
BP4DPLUS_SUBJECTS = frozenset([f"F{i:03d}" for i in range(1, 83)] + [f"M{i:03d}" for i in range(1, 59)])
UNKNOWN = 9
IMAGE_EXT = (".jpg", ".jpeg", ".png")


def gender_of(subject: str) -> int:
  """1 = female (F...), 0 = male (M...), as the subject names encode it."""
  return {"F": 1, "M": 0}.get(subject[:1], -1)


def _read_occurrence(path: str, problems: common.Problems) -> dict[int, tuple[np.ndarray, str, int]]:
  """frame -> (12 AU occurrences, file, line); rows with a 9 dropped and counted."""
  rows = common.read_rows(path, problems, header=True)
  _, head = next(rows, (0, []))
  try:
    au_cols = [head.index(str(a)) for a in labels.BP4D_DETECTION_AUS]
  except ValueError:
    missing = [a for a in labels.BP4D_DETECTION_AUS if str(a) not in head]
    raise common.BadInputError(path, 1, f"header lacks AU column(s) {missing}; "
                                        f"expected the frame column then AU numbers") from None
  out = {}
  for line, row in rows:
    frame = common.parse_int(row[0], path, line, "frame", problems)
    vals = [common.parse_int(row[c], path, line, f"AU{head[c]}", problems) for c in au_cols]
    if frame is None or None in vals:
      continue
    if UNKNOWN in vals:
      problems.drop("AU occurrence unknown (9)")
      continue
    if any(v not in (0, 1) for v in vals):
      problems.bad_input(path, line, f"AU occurrence values {vals}; expected 0/1 (9 = unknown)")
      continue
    out[frame] = (np.asarray(vals, np.float32), path, line)
  return out


def _read_intensity(root: str, subject: str, task: str, problems: common.Problems):
  """frame -> (5 intensities, with NaN where an AU file lacks the frame), or None."""
  per_au = []
  for a in labels.BP4D_INTENSITY_AUS:
    path = os.path.join(root, "AU_INT", f"AU{a:02d}", f"{subject}_{task}_AU{a:02d}.csv")
    if not os.path.isfile(path):
      return None
    values = {}
    for line, row in common.read_rows(path, problems, columns=2):
      frame = common.parse_int(row[0], path, line, "frame", problems)
      v = common.parse_int(row[1], path, line, "intensity", problems)
      if frame is None or v is None:
        continue
      if v != UNKNOWN and not 0 <= v <= 5:
        problems.bad_input(path, line, f"intensity {v}; expected 0..5 (9 = unknown)")
        continue
      values[frame] = v
    per_au.append(values)
  frames = set().union(*per_au)
  return {f: np.array([d.get(f, np.nan) for d in per_au], np.float32) for f in frames}


def read_raw(root: str, problems: common.Problems, *, plus: bool = False) -> list[common.Example]:
  """Every labelled frame of the raw layout (unsplit)."""
  occ_dir = os.path.join(root, "AU_OCC")
  common.require_dir(occ_dir, "<subject>_<task>.csv AU occurrence files")
  has_intensity = os.path.isdir(os.path.join(root, "AU_INT"))
  examples = []
  for name in sorted(os.listdir(occ_dir)):
    stem, ext = os.path.splitext(name)
    if ext.lower() != ".csv":
      continue
    if "_" not in stem:
      problems.bad_input(os.path.join(occ_dir, name), 0, "expected a name <subject>_<task>.csv")
      continue
    subject, task = stem.split("_", 1)
    occ = _read_occurrence(os.path.join(occ_dir, name), problems)
    inten = _read_intensity(root, subject, task, problems) if has_intensity else None
    frames = common.index_frames(os.path.join(root, subject, task), IMAGE_EXT)
    for frame in sorted(occ):
      au, src, line = occ[frame]
      au_int = np.full(len(labels.BP4D_INTENSITY_AUS), np.nan, np.float32)
      if inten is not None:
        if frame not in inten or np.isnan(inten[frame]).any():
          problems.drop("no AU intensity label for the frame")
          continue
        if (inten[frame] == UNKNOWN).any():
          problems.drop("AU intensity unknown (9)")
          continue
        au_int = inten[frame]
      if frame not in frames:
        problems.bad_input(src, line, f"missing frame: no image {subject}/{task}/{frame}.jpg "
                                      f"(zero-padded or not) under {root}")
        continue
      rel = f"{subject}/{task}/{frames[frame]}"
      examples.append(common.Example(
          path=rel, image_path=os.path.join(root, rel), subject=subject, session=task,
          frame=frame, au=au, au_intensity=au_int, source=src, line=line))
  return examples


def read_list(root: str, list_file: str, label_file: str,
              problems: common.Problems) -> list[common.Example]:
  """The list-file variant: relative image paths and matching 0/1 label lines."""
  common.require_file(list_file, "one relative image path per line")
  common.require_file(label_file, f"{len(labels.BP4D_DETECTION_AUS)} space-separated 0/1 per line")
  paths = [ln.strip() for ln in open(list_file)]
  rows = [ln.split() for ln in open(label_file)]
  while paths and not paths[-1]:
    paths.pop()
  while rows and not rows[-1]:
    rows.pop()
  if len(paths) != len(rows):
    raise common.BadInputError(label_file, 0, f"{len(rows)} label lines for {len(paths)} "
                                              f"paths in {list_file}")
  n = len(labels.BP4D_DETECTION_AUS)
  examples = []
  for line, (rel, row) in enumerate(zip(paths, rows), 1):
    if len(row) != n:
      problems.bad_input(label_file, line, f"{len(row)} columns, expected {n}")
      continue
    parts = rel.split("/")
    if len(parts) != 3:
      problems.bad_input(list_file, line, f"path {rel!r}; expected <subject>/<task>/<frame>.jpg")
      continue
    vals = [common.parse_int(v, label_file, line, "AU", problems) for v in row]
    if None in vals:
      continue
    if UNKNOWN in vals:
      problems.drop("AU occurrence unknown (9)")
      continue
    stem = os.path.splitext(parts[2])[0]
    examples.append(common.Example(
        path=rel, image_path=os.path.join(root, rel), subject=parts[0], session=parts[1],
        frame=int(stem) if stem.isdigit() else -1, au=np.asarray(vals, np.float32),
        au_intensity=np.full(len(labels.BP4D_INTENSITY_AUS), np.nan, np.float32),
        source=list_file, line=line))
  return examples


def read(root: str, problems: common.Problems, *, plus: bool = False, fold_file: str = "",
         num_folds: int = 0, fold_seed: int = 0, list_file: str = "",
         label_file: str = "") -> common.Records:
  """BP4D (plus=False) or BP4D+ split into its fold parts."""
  if list_file:
    examples = read_list(root, list_file, label_file, problems)
  else:
    examples = read_raw(root, problems, plus=plus)
  found = {ex.subject for ex in examples}
  if not found:
    raise common.BadInputError(os.path.join(root, "AU_OCC"), 0, "empty: no labelled frame")
  known = BP4DPLUS_SUBJECTS if plus else BP4D_SUBJECTS
  if fold_file:
    folds = common.read_fold_file(fold_file)
  elif plus:
    n = num_folds or 3
    folds = common.FoldParts(common.seeded_folds(sorted(found), n, fold_seed),
                             f"BP4D+ {n} seeded folds (seed {fold_seed})", list(range(1, n + 1)))
  else:
    folds = common.FoldParts([p.split() for p in BP4D_FOLDS], "built-in BP4D standard folds",
                             [1, 2, 3])
  folds = common.check_folds(folds, found, problems, known)
  attributes = common.read_attributes(os.path.join(root, "subjects.csv"), problems)
  for s in found:
    attributes.setdefault(s, {}).setdefault("gender", gender_of(s))
  has_int = bool(examples) and not np.isnan(examples[0].au_intensity).any()
  return common.Records(
      splits=common.split_by_folds(examples, folds), folds=folds, attributes=attributes,
      info={"detection_aus": list(labels.BP4D_DETECTION_AUS),
            "intensity_aus": list(labels.BP4D_INTENSITY_AUS), "has_intensity": has_int})
