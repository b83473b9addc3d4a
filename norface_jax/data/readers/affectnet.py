"""The AffectNet reader: manual annotation CSVs (box, 68 landmarks) or the newer layout.

Layout (FORMATS.md): `Manually_Annotated_file_lists/{training,validation}.csv` with the
header `subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,
expression,valence,arousal`, images under `Manually_Annotated_Images/`. The official
validation set is the test split. Expression codes 0..7 equal the canonical order
(labels.py); 8..10 (None, Uncertain, No-Face) are dropped and counted. Contempt (7) is
kept in the prepared data; 7-class runs drop it when reading (`num_classes`).

Newer release: `{train_set,val_set}/images/<i>.jpg` with `annotations/<i>_exp.npy`
(and `<i>_lnd.npy` landmarks when present); images there are already face crops.
"""

from __future__ import annotations

import os

import numpy as np

from norface_jax.data import labels
from norface_jax.data.readers import common

HEADER = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height",
          "facial_landmarks", "expression", "valence", "arousal")
LISTS = {"train": "training.csv", "test": "validation.csv"}
NEW_SETS = {"train": "train_set", "test": "val_set"}


def _emotion(code: int, problems: common.Problems) -> int | None:
  if code in labels.AFFECTNET_NON_EMOTION_CODES:
    problems.drop(f"AffectNet expression {code} ({labels.AFFECTNET_NON_EMOTION_CODES[code]})")
    return None
  return labels.affectnet_to_canonical(code, num_classes=8)


def parse_landmarks(text: str) -> np.ndarray | None:
  """'x;y;x;y;...' (68 points) -> (68, 2) float32, or None if malformed."""
  try:
    v = np.array([float(t) for t in text.split(";") if t.strip()], np.float32)
  except ValueError:
    return None
  return v.reshape(68, 2) if v.size == 136 else None


def _read_csv(root: str, split: str, problems: common.Problems) -> list[common.Example]:
  path = os.path.join(root, "Manually_Annotated_file_lists", LISTS[split])
  common.require_file(path, "the AffectNet manual annotation list (" + ",".join(HEADER) + ")")
  rows = common.read_rows(path, problems, columns=len(HEADER))
  _, head = next(rows, (0, []))
  if tuple(head) != HEADER:
    raise common.BadInputError(path, 1, f"header {head}; expected {','.join(HEADER)}")
  examples = []
  for line, row in rows:
    code = common.parse_int(row[6], path, line, "expression", problems)
    if code is None:
      continue
    if not 0 <= code <= 10:
      problems.bad_input(path, line, f"expression {code}; expected 0..10")
      continue
    emotion = _emotion(code, problems)
    if emotion is None:
      continue
    try:
      box = tuple(float(v) for v in row[1:5])
    except ValueError:
      problems.bad_input(path, line, f"face box {row[1:5]} is not numeric")
      continue
    lm = parse_landmarks(row[5]) if row[5].strip() else None
    if row[5].strip() and lm is None:
      problems.bad_input(path, line, "facial_landmarks is not 68 'x;y' pairs")
      continue
    rel = "Manually_Annotated_Images/" + row[0]
    try:
      valence, arousal = float(row[7]), float(row[8])
    except ValueError:
      valence = arousal = float("nan")
    examples.append(common.Example(
        path=rel, image_path=os.path.join(root, rel), emotion=emotion, box=box, landmarks=lm,
        valence=valence, arousal=arousal, source=path, line=line))
  return examples


def _read_new(root: str, split: str, problems: common.Problems) -> list[common.Example]:
  folder = os.path.join(root, NEW_SETS[split])
  ann = os.path.join(folder, "annotations")
  common.require_dir(os.path.join(folder, "images"), "<i>.jpg face crops")
  examples = []
  for name in sorted(os.listdir(os.path.join(folder, "images"))):
    stem, ext = os.path.splitext(name)
    if ext.lower() not in (".jpg", ".jpeg", ".png"):
      continue
    exp_path = os.path.join(ann, f"{stem}_exp.npy")
    if not os.path.isfile(exp_path):
      problems.bad_input(exp_path, 0, f"missing: the expression of images/{name}")
      continue
    try:
      code = int(np.load(exp_path))
    except (ValueError, OSError) as e:
      problems.bad_input(exp_path, 0, f"unreadable expression: {e}")
      continue
    emotion = _emotion(code, problems)
    if emotion is None:
      continue
    lm_path = os.path.join(ann, f"{stem}_lnd.npy")
    lm = None
    if os.path.isfile(lm_path):
      lm = np.asarray(np.load(lm_path), np.float32).reshape(68, 2)
    rel = f"{NEW_SETS[split]}/images/{name}"
    examples.append(common.Example(path=rel, image_path=os.path.join(root, rel), emotion=emotion,
                                   landmarks=lm, source=exp_path))
  return examples


def read(root: str, problems: common.Problems) -> common.Records:
  """Train (training.csv) and test (validation.csv) examples."""
  new = (not os.path.isdir(os.path.join(root, "Manually_Annotated_file_lists"))
         and os.path.isdir(os.path.join(root, "train_set")))
  splits = {}
  for split in ("train", "test"):
    splits[split] = (_read_new if new else _read_csv)(root, split, problems)
    if not splits[split]:
      where = (os.path.join(root, NEW_SETS[split]) if new else
               os.path.join(root, "Manually_Annotated_file_lists", LISTS[split]))
      raise common.BadInputError(where, 0, f"empty split {split!r}: no usable example")
  return common.Records(splits=splits, info={
      "emotions": list(labels.EMOTIONS), "layout": "release2" if new else "manual"})
