"""Presets with the label spaces, subjects, tasks and folds of the real datasets."""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np

from norface_jax.data import labels
from norface_jax.data.synthfacs import scene

_BP4D_FOLDS = (
    "F001 M007 F018 F008 F002 M004 F010 F009 M012 M001 F016 M014 F023 M008",
    "M011 F003 M010 M002 F005 F022 M018 M017 F013 M016 F020 F011 M013 M005",
    "F007 F015 F006 F019 M006 M009 F012 M003 F004 F021 F017 M015 F014",
)
_DISFA_FOLDS = (
    "SN002 SN010 SN001 SN026 SN027 SN032 SN030 SN009 SN016",
    "SN013 SN018 SN011 SN028 SN012 SN006 SN031 SN021 SN024",
    "SN003 SN029 SN023 SN025 SN008 SN005 SN007 SN017 SN004",
)
E = labels.emotion_index
# Emotion each BP4D(+) task elicits (T1 joke, T2 sad film, T3 surprise, T4 startle,
# T5 embarrassment, T6 fear, T7 pain, T8 disgust; BP4D+ adds T9 anger, T10 contempt).
_TASK_EMOTIONS = (E("happiness"), E("sadness"), E("surprise"), E("fear"), E("happiness"),
                  E("fear"), E("anger"), E("disgust"), E("anger"), E("contempt"))


@dataclasses.dataclass(frozen=True)
class Preset:
  """What a SynthFACS stand-in for a real dataset looks like."""
  name: str
  subjects: tuple[str, ...]
  detection_aus: tuple[int, ...]
  intensity_aus: tuple[int, ...]
  occurrence_threshold: float
  domain: int
  num_emotions: int
  tasks: tuple[str, ...] = ()
  fold_parts: tuple[tuple[str, ...], ...] = ()
  test_fraction: float = 0.0  # identity-disjoint test share for FER presets.
  frames_per_subject: int = 8  # default for in-memory sources.

  @property
  def folds(self) -> list[list[str]]:
    """Subject-exclusive parts; fold k tests part k and trains on the rest."""
    return [list(p) for p in self.fold_parts]

  def gender(self, subject: int) -> int | None:
    """Group gender from the subject name (F = 1) where the dataset encodes it."""
    name = self.subjects[subject]
    if self.name.startswith("bp4d"):
      return int(name[0] == "F")
    return None

  def split_subjects(self, split: str, fold: int = 0) -> list[int]:
    """Subject indices of a split: by folds, or identity-disjoint train/test for FER."""
    if split not in ("train", "test", "all"):
      raise ValueError(f"split must be train, test or all, not {split!r}")
    if split == "all":
      return list(range(len(self.subjects)))
    if self.fold_parts:
      if not 0 <= fold < len(self.fold_parts):
        raise ValueError(f"fold {fold} outside 0..{len(self.fold_parts) - 1}")
      test = set(self.fold_parts[fold])
      return [i for i, s in enumerate(self.subjects) if (s in test) == (split == "test")]
    n_test = max(1, int(round(len(self.subjects) * self.test_fraction)))
    idx = list(range(len(self.subjects)))
    return idx[-n_test:] if split == "test" else idx[:-n_test]

  def task_of(self, index: int) -> int:
    """Task of a subject's frame `index` (round-robin), or -1 without tasks."""
    return index % len(self.tasks) if self.tasks else -1

  def emotion_weights(self, task: int) -> np.ndarray:
    """Distribution over canonical emotions for one frame."""
    w = np.zeros(len(labels.EMOTIONS))
    if task >= 0:
      w[0] = 0.25
      w[_TASK_EMOTIONS[task]] += 0.75
    elif self.domain == scene.LAB:  # DISFA: a mix of stimuli, much neutral.
      w[:] = 0.6 / 7
      w[0] = 0.4
    else:
      w[:self.num_emotions] = 1.0
    return w / w.sum()

  @property
  def salt(self) -> int:
    return zlib.crc32(self.name.encode())


def _split(s: str) -> tuple[str, ...]:
  return tuple(s.split())


def _bp4dplus_folds(subjects: tuple[str, ...], n: int = 3, seed: int = 0):
  order = np.random.default_rng(seed).permutation(len(subjects))
  return tuple(tuple(subjects[i] for i in sorted(part)) for part in np.array_split(order, n))


def _make() -> dict[str, Preset]:
  bp4d_subj = tuple([f"F{i:03d}" for i in range(1, 24)] + [f"M{i:03d}" for i in range(1, 19)])
  plus_subj = tuple([f"F{i:03d}" for i in range(1, 83)] + [f"M{i:03d}" for i in range(1, 59)])
  disfa_parts = tuple(_split(p) for p in _DISFA_FOLDS)
  disfa_subj = tuple(sorted(s for p in disfa_parts for s in p))
  return {
      "bp4d": Preset("bp4d", bp4d_subj, labels.BP4D_DETECTION_AUS, labels.BP4D_INTENSITY_AUS,
                     1, scene.LAB, 8, tuple(f"T{i}" for i in range(1, 9)),
                     tuple(_split(p) for p in _BP4D_FOLDS)),
      "bp4dplus": Preset("bp4dplus", plus_subj, labels.BP4D_DETECTION_AUS,
                         labels.BP4D_INTENSITY_AUS, 1, scene.LAB, 8,
                         tuple(f"T{i}" for i in range(1, 11)), _bp4dplus_folds(plus_subj)),
      "disfa": Preset("disfa", disfa_subj, labels.DISFA_DETECTION_AUS,
                      labels.DISFA_INTENSITY_AUS, labels.DISFA_OCCURRENCE_THRESHOLD, scene.LAB,
                      8, (), disfa_parts),
      "affectnet": Preset("affectnet", tuple(f"A{i:05d}" for i in range(400)),
                          labels.BP4D_DETECTION_AUS, labels.BP4D_INTENSITY_AUS, 1, scene.WILD,
                          8, test_fraction=0.2, frames_per_subject=4),
      "rafdb": Preset("rafdb", tuple(f"R{i:05d}" for i in range(400)),
                      labels.BP4D_DETECTION_AUS, labels.BP4D_INTENSITY_AUS, 1, scene.WILD, 7,
                      test_fraction=0.2, frames_per_subject=4),
  }


PRESETS: dict[str, Preset] = _make()


def get(name: str) -> Preset:
  """A preset by name (bp4d, bp4dplus, disfa, affectnet, rafdb)."""
  try:
    return PRESETS[name]
  except KeyError:
    raise KeyError(f"unknown SynthFACS preset {name!r}; known: {', '.join(PRESETS)}") from None


def preset_info(name: str) -> dict:
  """Label-space metadata of a preset, for configs and models."""
  p = get(name)
  return {
      "name": p.name,
      "au_names": [f"AU{a}" for a in p.detection_aus],
      "detection_aus": list(p.detection_aus),
      "intensity_au_names": [f"AU{a}" for a in p.intensity_aus],
      "intensity_aus": list(p.intensity_aus),
      "num_emotions": p.num_emotions,
      "emotions": list(labels.EMOTIONS[:p.num_emotions]),
      "subjects": list(p.subjects),
      "tasks": list(p.tasks),
      "folds": p.folds,
      "domain": scene.DOMAINS[p.domain],
  }
