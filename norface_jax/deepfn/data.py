"""Per-subject frames for DeepFN, from any random-access source.

`pool_from_source` reads a source whose items have `image`, `au`, `subject`, `gender`
and `skin` (SynthFACS, or a dataset prepared by `launch/prepare_data.py`) into one
`Pool` of arrays. The within-person split uses `segment`: the item's `task` where the
source has one (BP4D's tasks), otherwise contiguous blocks of each subject's frames.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

SKIN_NAMES = ("lighter", "darker")
GENDER_NAMES = ("male", "female")


@dataclasses.dataclass
class Pool:
  """All frames of one dataset: images uint8 (N,H,W,C), au (N,A) 0/1, per-frame ids."""
  name: str
  au_names: tuple[str, ...]
  images: np.ndarray
  au: np.ndarray
  subject: np.ndarray
  gender: np.ndarray
  skin: np.ndarray
  segment: np.ndarray

  def subjects(self) -> list[int]:
    return [int(s) for s in np.unique(self.subject)]

  def attribute(self, subject: int, key: str) -> int:
    """A subject's group value ('gender' or 'skin'), from its first frame."""
    return int(getattr(self, key)[np.argmax(self.subject == subject)])

  def select_aus(self, names: Sequence[str]) -> "Pool":
    """The same frames with the AU columns `names` (e.g. the BP4D/DISFA common five)."""
    missing = [n for n in names if n not in self.au_names]
    if missing:
      raise ValueError(f"{self.name} has no {missing}; it has {self.au_names}")
    cols = [self.au_names.index(n) for n in names]
    return dataclasses.replace(self, au_names=tuple(names), au=self.au[:, cols])


def pool_from_source(source: Any, au_names: Sequence[str], name: str,
                     segments: int = 4) -> Pool:
  """Reads every item of `source` (items: image, au, subject, gender, skin[, task])."""
  if len(source) == 0:
    raise ValueError(f"{name}: empty source")
  items = [source[i] for i in range(len(source))]
  missing = [k for k in ("image", "au", "subject", "gender", "skin") if k not in items[0]]
  if missing:
    raise KeyError(f"{name}: source items lack {missing} (have {sorted(items[0])})")
  get = lambda k, dt: np.asarray([it[k] for it in items], dt)  # noqa: E731
  subject = get("subject", np.int64)
  au = get("au", np.float32)
  if au.shape[1] != len(au_names):
    raise ValueError(f"{name}: {au.shape[1]} AU columns for names {list(au_names)}")
  if "task" in items[0]:
    segment = get("task", np.int64)
  else:
    segment = np.zeros(len(items), np.int64)
    for s in np.unique(subject):
      rows = np.flatnonzero(subject == s)
      segment[rows] = np.arange(len(rows)) * segments // len(rows)
  return Pool(name=name, au_names=tuple(au_names), images=np.stack([it["image"] for it in items]),
              au=(au > 0.5).astype(np.float32), subject=subject,
              gender=get("gender", np.int64), skin=get("skin", np.int64), segment=segment)


class _WithTask:
  """SynthFACS source + each frame's task (BP4D-like presets), for the within-person split."""

  def __init__(self, source):
    self.source = source

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    item = dict(self.source[i])
    _, frame = self.source.locate(i)
    item["task"] = np.int64(self.source.preset.task_of(frame))
    return item


def synthfacs_pool(preset: str, *, seed: int = 0, size: int = 64, frames_per_subject: int = 32,
                   subjects: Sequence[str] = (), identity_bias: float = 1.0) -> Pool:
  """A SynthFACS preset (all its subjects, or the named ones) as a `Pool`."""
  from norface_jax.data.synthfacs import presets
  from norface_jax.data.synthfacs.source import SynthFACSSource
  p = presets.get(preset)
  idx = None
  if subjects:
    unknown = [s for s in subjects if s not in p.subjects]
    if unknown:
      raise ValueError(f"{preset} has no subjects {unknown}")
    idx = [p.subjects.index(s) for s in subjects]
  source = SynthFACSSource(preset, "all", seed=seed, size=size,
                           frames_per_subject=frames_per_subject, subjects=idx,
                           identity_bias=identity_bias)
  if p.tasks:
    source = _WithTask(source)
  return pool_from_source(source, [f"AU{a}" for a in p.detection_aus], preset)


def open_pool(data_cfg: Any, dataset: str) -> Pool:
  """The pool of `dataset`: SynthFACS when `data_cfg.synthetic`, else the prepared real
  dataset; `folder:<name>` is the folder dataset prepared from `<name>.csv` (its AU
  columns, subjects, gender and skin: `data/readers/folder.py`)."""
  if data_cfg.synthetic:
    return synthfacs_pool(dataset, seed=data_cfg.seed, size=data_cfg.image_size,
                          frames_per_subject=data_cfg.frames_per_subject,
                          subjects=tuple(data_cfg.subjects.get(dataset, ())),
                          identity_bias=data_cfg.identity_bias)
  import ml_collections
  from norface_jax.data import registry
  name, _, prepared_config = dataset.partition(":")
  cfg = ml_collections.ConfigDict(dict(
      dataset=name, synthetic=False, normalization="none", data_dir=data_cfg.data_dir,
      image_size=data_cfg.image_size, fold=0, test_dataset="", test_preset="", num_classes=7,
      prepared_config=prepared_config))
  source = registry.make_source(cfg, "all", task="au_detection")  # Every part of the dataset.
  keep = frames_of_subjects(registry.subject_ids(source), data_cfg.frames_per_subject,
                            tuple(data_cfg.subjects.get(dataset, ())),
                            getattr(source, "meta", {}).get("subjects", []))
  names = registry.label_names(cfg, "au_detection", name)
  return pool_from_source(_TaskFromPath(registry.Subset(source, keep)), names, dataset)


def frames_of_subjects(ids: np.ndarray, per_subject: int, subjects: Sequence[str] = (),
                       names: Sequence[str] = ()) -> np.ndarray:
  """Indices of up to `per_subject` frames of each subject (evenly spaced over its
  frames in the source's order; 0 = all), of the named `subjects` only if given
  (`names[id]` is each id's subject name). Items without a subject are dropped."""
  ids = np.asarray(ids)
  wanted = None
  if subjects:
    unknown = [s for s in subjects if s not in names]
    if unknown:
      raise ValueError(f"config.data.subjects names {unknown}, not in the prepared data "
                       f"(subjects: {list(names)})")
    wanted = {list(names).index(s) for s in subjects}
  out = []
  for s in np.unique(ids[ids >= 0]):
    if wanted is not None and int(s) not in wanted:
      continue
    rows = np.flatnonzero(ids == s)
    if per_subject and len(rows) > per_subject:
      rows = rows[np.linspace(0, len(rows) - 1, per_subject).round().astype(int)]
    out.append(rows)
  if not out:
    raise ValueError("no frame with a subject id in the prepared data (DeepFN needs subjects)")
  return np.concatenate(out)


class _TaskFromPath:
  """Items + `task`, BP4D's task folder in `<subject>/<task>/<frame>` (the within-person
  split's segments); sources without such paths pass through unchanged."""

  def __init__(self, source: Any):
    self.source = source
    first = str(source[0].get("path", "")) if len(source) else ""
    self.tasks: dict[str, int] | None = {} if first.count("/") >= 2 else None

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, i: int) -> dict[str, Any]:
    item = self.source[i]
    if self.tasks is not None:
      task = str(item["path"]).split("/")[-2]
      item = dict(item, task=np.int64(self.tasks.setdefault(task, len(self.tasks))))
    return item
