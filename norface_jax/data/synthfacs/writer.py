"""Writes a SynthFACS preset to disk in the real dataset's own layout (FORMATS.md).

So that the real readers (and their TFDS builders) run end to end on a fresh machine.
"""

from __future__ import annotations

import csv
import os

import numpy as np
from PIL import Image

from norface_jax.data import labels
from norface_jax.data.synthfacs import generate
from norface_jax.data.synthfacs import presets as presets_lib

AFFECTNET_HEADER = ("subDirectory_filePath,face_x,face_y,face_width,face_height,"
                    "facial_landmarks,expression,valence,arousal")
# Rough (valence, arousal) per canonical emotion, for AffectNet's extra columns.
_VA = ((0.0, 0.0), (0.7, 0.4), (-0.6, -0.3), (0.2, 0.7), (-0.6, 0.7), (-0.6, 0.3),
       (-0.5, 0.6), (-0.4, 0.2))


def pick_subjects(preset: presets_lib.Preset, n: int | None) -> list[int]:
  """n subjects spread over the folds (round robin over the parts), in preset order."""
  if n is None or n >= len(preset.subjects):
    return list(range(len(preset.subjects)))
  if not preset.fold_parts:
    return list(range(n))
  order, parts = [], [list(p) for p in preset.fold_parts]
  while len(order) < n:
    for p in parts:
      if p and len(order) < n:
        order.append(preset.subjects.index(p.pop(0)))
  return sorted(order)


def _save(path: str, image: np.ndarray, quality: int = 92) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  img = Image.fromarray(image)
  if path.endswith(".jpg"):
    img.save(path, quality=quality)
  else:
    img.save(path)


def _batches(preset, seed, pairs, size, identity_bias, batch=128, **kw):
  for lo in range(0, len(pairs), batch):
    chunk = pairs[lo:lo + batch]
    out = generate.render_items(preset, seed, [p[0] for p in chunk], [p[1] for p in chunk],
                                size, identity_bias, **kw)
    for j in range(len(chunk)):
      yield chunk[j], {k: v[j] for k, v in out.items()}


def write_bp4d(preset, root, subjects, frames, size, seed, identity_bias) -> int:
  """<root>/<subj>/<task>/<frame>.jpg, AU_OCC/<subj>_<task>.csv, AU_INT/AUxx/<subj>_<task>_AUxx.csv."""
  n_tasks = len(preset.tasks)
  pairs = [(s, f * n_tasks + t) for s in subjects for t in range(n_tasks) for f in range(frames)]
  occ: dict[tuple[str, str], list] = {}
  attrs: dict[str, dict] = {}
  for (s, index), item in _batches(preset, seed, pairs, size, identity_bias):
    subj, task, frame = preset.subjects[s], preset.tasks[int(item["task"])], index // n_tasks
    attrs[subj] = item
    _save(os.path.join(root, subj, task, f"{frame}.jpg"), item["image"])
    occ.setdefault((subj, task), []).append((frame, item["au"], item["au_intensity"]))
  os.makedirs(os.path.join(root, "AU_OCC"), exist_ok=True)
  for (subj, task), rows in occ.items():
    with open(os.path.join(root, "AU_OCC", f"{subj}_{task}.csv"), "w", newline="") as f:
      w = csv.writer(f)
      w.writerow(["frame"] + [str(a) for a in preset.detection_aus])
      for frame, au, _ in rows:
        w.writerow([frame] + [int(v) for v in au])
    for j, a in enumerate(preset.intensity_aus):
      d = os.path.join(root, "AU_INT", f"AU{a:02d}")
      os.makedirs(d, exist_ok=True)
      with open(os.path.join(d, f"{subj}_{task}_AU{a:02d}.csv"), "w") as f:
        f.writelines(f"{frame},{int(inten[j])}\n" for frame, _, inten in rows)
  write_subjects(root, attrs)
  return len(pairs)


def write_disfa(preset, root, subjects, frames, size, seed, identity_bias) -> int:
  """<root>/<subj>/<frame>.png and ActionUnit_Labels/<subj>/<subj>_au<N>.txt."""
  pairs = [(s, f) for s in subjects for f in range(frames)]
  rows: dict[str, list] = {}
  attrs: dict[str, dict] = {}
  for (s, frame), item in _batches(preset, seed, pairs, size, identity_bias):
    subj = preset.subjects[s]
    attrs[subj] = item
    _save(os.path.join(root, subj, f"{frame}.png"), item["image"])
    rows.setdefault(subj, []).append((frame, item["au_intensity"]))
  for subj, r in rows.items():
    d = os.path.join(root, "ActionUnit_Labels", subj)
    os.makedirs(d, exist_ok=True)
    for j, a in enumerate(preset.intensity_aus):
      with open(os.path.join(d, f"{subj}_au{a}.txt"), "w") as f:
        f.writelines(f"{frame},{int(inten[j])}\n" for frame, inten in r)
  write_subjects(root, attrs)
  return len(pairs)


# SynthFACS draws two skin groups; as Fitzpatrick types: lighter -> II, darker -> V
# (the paper's groups are I-II and V-VI).
FITZPATRICK_OF_SKIN = (2, 5)


def write_subjects(root: str, items: dict[str, dict]) -> None:
  """`<root>/subjects.csv` (subject,gender,fitzpatrick), the side file a user writes for
  the group analyses (docs/datasets.md), from each subject's rendered attributes."""
  with open(os.path.join(root, "subjects.csv"), "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["subject", "gender", "fitzpatrick"])
    for subj in sorted(items):
      w.writerow([subj, int(items[subj]["gender"]), FITZPATRICK_OF_SKIN[int(items[subj]["skin"])]])


def write_affectnet(preset, root, subjects, frames, size, seed, identity_bias) -> int:
  """Manually_Annotated_file_lists/{training,validation}.csv + Manually_Annotated_Images/."""
  test = set(presets_lib.Preset.split_subjects(_sub_preset(preset, subjects), "test"))
  lists = {"training.csv": [], "validation.csv": []}
  pairs = [(s, f) for s in subjects for f in range(frames)]
  for (s, frame), item in _batches(preset, seed, pairs, size, identity_bias):
    rel = f"{s // 100}/{preset.subjects[s]}_{frame}.jpg"
    _save(os.path.join(root, "Manually_Annotated_Images", rel), item["image"])
    lm = item["landmarks"]
    x0, y0 = np.floor(lm.min(0)).astype(int)
    x1, y1 = np.ceil(lm.max(0)).astype(int)
    pad = int(0.25 * (y1 - y0))
    x0, y0 = max(0, x0 - pad // 2), max(0, y0 - 2 * pad)
    x1, y1 = min(size, x1 + pad // 2), min(size, y1 + pad // 2)
    v, a = _VA[int(item["emotion"])]
    row = [rel, x0, y0, x1 - x0, y1 - y0, ";".join(f"{p:.2f}" for p in lm.reshape(-1)),
           int(item["emotion"]), v, a]
    lists["validation.csv" if subjects.index(s) in test else "training.csv"].append(row)
  d = os.path.join(root, "Manually_Annotated_file_lists")
  os.makedirs(d, exist_ok=True)
  for name, rows in lists.items():
    with open(os.path.join(d, name), "w", newline="") as f:
      f.write(AFFECTNET_HEADER + "\n")
      csv.writer(f).writerows(rows)
  return len(pairs)


def write_rafdb(preset, root, subjects, frames, size, seed, identity_bias) -> int:
  """EmoLabel/list_patition_label.txt, Image/original/<name>, Image/aligned/<stem>_aligned.jpg."""
  test = set(presets_lib.Preset.split_subjects(_sub_preset(preset, subjects), "test"))
  pairs = [(s, f) for s in subjects for f in range(frames)]
  counts, lines = {"train": 0, "test": 0}, []
  aligned = dict(_batches(preset, seed, pairs, 100, identity_bias, frontal=True))
  for (s, frame), item in _batches(preset, seed, pairs, size, identity_bias):
    split = "test" if subjects.index(s) in test else "train"
    counts[split] += 1
    stem = f"{split}_{counts[split]:05d}" if split == "train" else f"test_{counts[split]:04d}"
    _save(os.path.join(root, "Image", "original", stem + ".jpg"), item["image"])
    _save(os.path.join(root, "Image", "aligned", stem + "_aligned.jpg"), aligned[(s, frame)]["image"])
    lines.append(f"{stem}.jpg {labels.canonical_to_rafdb(int(item['emotion']))}\n")
  os.makedirs(os.path.join(root, "EmoLabel"), exist_ok=True)
  with open(os.path.join(root, "EmoLabel", "list_patition_label.txt"), "w") as f:
    f.writelines(lines)
  return len(pairs)


def _sub_preset(preset, subjects):
  """The preset restricted to the chosen subjects (for the identity-disjoint split)."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  return dataclasses.replace(preset, subjects=tuple(preset.subjects[s] for s in subjects))


WRITERS = {"bp4d": write_bp4d, "bp4dplus": write_bp4d, "disfa": write_disfa,
           "affectnet": write_affectnet, "rafdb": write_rafdb}


def write(like: str, out: str, subjects: int | None = None, frames: int = 4, size: int = 112,
          seed: int = 0, identity_bias: float = 1.0) -> int:
  """Writes preset `like` under `out`; returns the number of images written.

  frames: per subject and task (BP4D/BP4D+), per subject (DISFA, and per identity for
  AffectNet/RAF-DB). subjects: how many (spread over the folds), None = all.
  """
  preset = presets_lib.get(like)
  chosen = pick_subjects(preset, subjects)
  return WRITERS[like](preset, out, chosen, frames, size, seed, identity_bias)
