"""Grain random-access data source over SynthFACS, rendered in memory (no files)."""

from __future__ import annotations

import dataclasses

import numpy as np

from norface_jax.data.synthfacs import generate
from norface_jax.data.synthfacs import presets as presets_lib

RENDER_BATCH = 256  # items rendered together when pre-rendering the cache.


class SynthFACSSource:
  """RandomAccessDataSource (`__len__`, `__getitem__`) of one preset split.

  Item i is frame (i % frames_per_subject) of the split's subject
  (i // frames_per_subject). Items are deterministic and the source is picklable, so
  Grain worker processes and `ShardByJaxProcess` sharding need nothing more. With
  cache=True all items are pre-rendered in vectorised batches at construction.
  Each item: image uint8 (S,S,3); au float32 (n_det,) 0/1; au_intensity float32
  (n_int,) 0..5; au_all float32 (17,) 0..5, every SynthFACS AU (`labels.SYNTH_AUS`); emotion, subject (index into preset.subjects), gender, skin, domain,
  index int32 scalars; landmarks float32 (68,2) px; brows float32 (4,).
  """

  KEYS = ("image", "au", "au_intensity", "au_all", "emotion", "subject", "gender", "skin",
          "domain", "landmarks", "brows", "index")

  def __init__(self, preset: str = "bp4d", split: str = "train", fold: int = 0, seed: int = 0,
               size: int = 112, frames_per_subject: int | None = None,
               identity_bias: float = 1.0, cache: bool = True,
               subjects: list[int] | None = None, num_identities: int | None = None,
               num_classes: int | None = None, normalized_target: int | None = None):
    """Extra options for the trainer:

    num_identities: FER presets (many identities, no folds) with this many instead.
    num_classes: emotions drawn only from the first `num_classes` canonical classes
      (7 = no contempt), so labels fit the config's head.
    normalized_target: also yield `image_norm`, the same expression rendered on this
      target subject with a fixed frontal pose and background (the ideal stage-1 output).
    """
    self.preset = presets_lib.get(preset)
    if num_identities:
      if self.preset.fold_parts:
        raise ValueError(f"num_identities is for FER presets; {preset} has fixed subjects")
      prefix = self.preset.subjects[0][0]
      self.preset = dataclasses.replace(
          self.preset, subjects=tuple(f"{prefix}{i:05d}" for i in range(num_identities)))
    if num_classes and num_classes < self.preset.num_emotions and not self.preset.tasks:
      self.preset = dataclasses.replace(self.preset, num_emotions=num_classes)
    self.num_classes = num_classes
    self.normalized_target = normalized_target
    if normalized_target is not None and not 0 <= normalized_target < len(self.preset.subjects):
      raise ValueError(f"normalized_target={normalized_target} outside the "
                       f"{len(self.preset.subjects)} subjects of {preset}")
    self.split, self.fold, self.seed, self.size = split, fold, seed, size
    self.identity_bias = identity_bias
    self.frames_per_subject = frames_per_subject or self.preset.frames_per_subject
    self.subjects = (list(subjects) if subjects is not None
                     else self.preset.split_subjects(split, fold))
    if not self.subjects:
      raise ValueError(f"{preset} split {split!r} fold {fold} has no subjects")
    self.keys = self.KEYS + (("image_norm",) if normalized_target is not None else ())
    self._cache = None
    if cache:
      parts = [self._render(np.arange(lo, min(lo + RENDER_BATCH, len(self))))
               for lo in range(0, len(self), RENDER_BATCH)]
      self._cache = {k: np.concatenate([p[k] for p in parts]) for k in self.keys}

  def __len__(self) -> int:
    return len(self.subjects) * self.frames_per_subject

  def subject_ids(self) -> np.ndarray:
    """The `subject` of every item, in order (no rendering)."""
    return np.repeat(np.asarray(self.subjects, np.int32), self.frames_per_subject)

  def locate(self, i: int) -> tuple[int, int]:
    """Item index -> (subject index in the preset, frame index)."""
    return self.subjects[i // self.frames_per_subject], i % self.frames_per_subject

  def _render(self, items: np.ndarray) -> dict[str, np.ndarray]:
    subj = [self.subjects[i // self.frames_per_subject] for i in items]
    frames = [i % self.frames_per_subject for i in items]
    out = generate.render_items(self.preset, self.seed, subj, frames, self.size,
                                self.identity_bias)
    out["index"] = np.asarray(items, np.int32)
    if self.num_classes:
      # Task-elicited presets (BP4D) may draw contempt; fold it into the head's range.
      out["emotion"] = np.where(out["emotion"] < self.num_classes, out["emotion"], 0).astype(np.int32)
    if self.normalized_target is not None:
      out["image_norm"] = generate.render_normalized(
          self.preset, self.seed, self.normalized_target, out["au_all"], out["asym"],
          self.size, self.identity_bias)["image"]
    return {k: out[k] for k in self.keys}

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    i = int(i)
    if not -len(self) <= i < len(self):
      raise IndexError(f"index {i} outside a source of {len(self)} items")
    i %= len(self)
    if self._cache is not None:
      return {k: v[i] for k, v in self._cache.items()}
    return {k: v[0] for k, v in self._render(np.array([i])).items()}

  def __repr__(self) -> str:
    return (f"SynthFACSSource(preset={self.preset.name!r}, split={self.split!r}, "
            f"fold={self.fold}, n={len(self)}, size={self.size})")
