"""The DISFA reader: extracted frames + per-AU intensity label files.

Layout (FORMATS.md): frames `<root>/<subject>/<frame>.png` (0-based; left camera);
labels `ActionUnit_Labels/<subject>/<subject>_au<N>.txt`, lines `frame,intensity`
(0..5) for the 12 AUs. Detection uses 8 AUs with occurrence = intensity >= 2. Label
frame numbers must equal the image numbers; if your labels are 1-based and your frames
0-based, pass frame_offset=-1 (a missing frame says so rather than guessing).
"""

from __future__ import annotations

import os

import numpy as np

from norface_jax.data import labels
from norface_jax.data.readers import common

DISFA_FOLDS = (
    "SN002 SN010 SN001 SN026 SN027 SN032 SN030 SN009 SN016",
    "SN013 SN018 SN011 SN028 SN012 SN006 SN031 SN021 SN024",
    "SN003 SN029 SN023 SN025 SN008 SN005 SN007 SN017 SN004",
)
DISFA_SUBJECTS = frozenset(s for p in DISFA_FOLDS for s in p.split())
IMAGE_EXT = (".png", ".jpg", ".jpeg")
_DET_COLS = [labels.DISFA_INTENSITY_AUS.index(a) for a in labels.DISFA_DETECTION_AUS]


def occurrence(intensity: np.ndarray) -> np.ndarray:
  """Detection labels (8 AUs) from the 12 intensities: 1 where intensity >= 2."""
  return (np.asarray(intensity)[..., _DET_COLS] >= labels.DISFA_OCCURRENCE_THRESHOLD).astype(np.float32)


def _read_subject(root: str, subject: str, problems: common.Problems):
  """frame -> (12 intensities, file, line) for one subject."""
  per_au = []
  for a in labels.DISFA_INTENSITY_AUS:
    path = os.path.join(root, "ActionUnit_Labels", subject, f"{subject}_au{a}.txt")
    common.require_file(path, f"the AU{a} labels of {subject} (lines frame,intensity)")
    values = {}
    for line, row in common.read_rows(path, problems, columns=2):
      frame = common.parse_int(row[0], path, line, "frame", problems)
      v = common.parse_int(row[1], path, line, "intensity", problems)
      if frame is None or v is None:
        continue
      if not 0 <= v <= 5:
        problems.bad_input(path, line, f"intensity {v}; expected 0..5")
        continue
      values[frame] = (v, path, line)
    per_au.append(values)
  out = {}
  first = per_au[0]
  for frame in sorted(set().union(*per_au)):
    if not all(frame in d for d in per_au):
      problems.drop("frame lacks a label in some AU file")
      continue
    _, path, line = first.get(frame, next(d[frame] for d in per_au if frame in d))
    out[frame] = (np.array([d[frame][0] for d in per_au], np.float32), path, line)
  return out


def read(root: str, problems: common.Problems, *, fold_file: str = "",
         frame_offset: int = 0) -> common.Records:
  """DISFA split into its 3 standard fold parts (or those of `fold_file`)."""
  lab_dir = os.path.join(root, "ActionUnit_Labels")
  common.require_dir(lab_dir, "<subject>/<subject>_au<N>.txt label files")
  subjects = sorted(d for d in os.listdir(lab_dir) if os.path.isdir(os.path.join(lab_dir, d)))
  if not subjects:
    raise common.BadInputError(lab_dir, 0, "empty: no subject folders")
  examples = []
  for subject in subjects:
    frames = common.index_frames(os.path.join(root, subject), IMAGE_EXT)
    for frame, (inten, path, line) in _read_subject(root, subject, problems).items():
      image_frame = frame + frame_offset
      if image_frame not in frames:
        problems.bad_input(path, line, f"missing frame: no image {subject}/{image_frame}.png under "
                                       f"{root} (frame_offset={frame_offset})")
        continue
      rel = f"{subject}/{frames[image_frame]}"
      examples.append(common.Example(
          path=rel, image_path=os.path.join(root, rel), subject=subject, frame=image_frame,
          au=occurrence(inten), au_intensity=inten, source=path, line=line))
  found = {ex.subject for ex in examples}
  if fold_file:
    folds = common.read_fold_file(fold_file)
  else:
    folds = common.FoldParts([p.split() for p in DISFA_FOLDS], "built-in DISFA standard folds",
                             [1, 2, 3])
  folds = common.check_folds(folds, found, problems, DISFA_SUBJECTS)
  attributes = common.read_attributes(os.path.join(root, "subjects.csv"), problems)
  return common.Records(
      splits=common.split_by_folds(examples, folds), folds=folds, attributes=attributes,
      info={"detection_aus": list(labels.DISFA_DETECTION_AUS),
            "intensity_aus": list(labels.DISFA_INTENSITY_AUS), "has_intensity": True,
            "occurrence_threshold": labels.DISFA_OCCURRENCE_THRESHOLD})
