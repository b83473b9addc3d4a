"""Label spaces shared by SynthFACS and the real dataset readers.

One canonical emotion order is used everywhere inside the project (AffectNet's
numbering of its first eight classes), so that cross-dataset runs (train RAF-DB,
test AffectNet and the reverse) compare like with like.
"""

from __future__ import annotations

# Every AU SynthFACS renders (the union of the datasets' label spaces).
SYNTH_AUS: tuple[int, ...] = (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 24, 25, 26)

BP4D_DETECTION_AUS: tuple[int, ...] = (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24)
BP4D_INTENSITY_AUS: tuple[int, ...] = (6, 10, 12, 14, 17)
DISFA_INTENSITY_AUS: tuple[int, ...] = (1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26)
DISFA_DETECTION_AUS: tuple[int, ...] = (1, 2, 4, 6, 9, 12, 25, 26)
DISFA_OCCURRENCE_THRESHOLD = 2  # DISFA occurrence = intensity >= 2.

# Canonical emotion order (index = class id inside the project).
EMOTIONS: tuple[str, ...] = (
    "neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger", "contempt",
)
EMOTIONS_7: tuple[str, ...] = EMOTIONS[:7]

# AffectNet's expression codes 0..7 equal the canonical order; 8..10 are not emotions.
AFFECTNET_CODES: dict[int, str] = dict(enumerate(EMOTIONS))
AFFECTNET_NON_EMOTION_CODES = {8: "none", 9: "uncertain", 10: "no-face"}

# RAF-DB basic-emotion labels 1..7.
RAFDB_CODES: dict[int, str] = {
    1: "surprise", 2: "fear", 3: "disgust", 4: "happiness", 5: "sadness", 6: "anger", 7: "neutral",
}


def emotion_index(name: str) -> int:
  """Canonical class id of an emotion name."""
  try:
    return EMOTIONS.index(name)
  except ValueError:
    raise KeyError(f"unknown emotion {name!r}; known: {', '.join(EMOTIONS)}") from None


def affectnet_to_canonical(code: int, num_classes: int = 7) -> int | None:
  """AffectNet expression code -> canonical id, or None when the class is dropped."""
  if code in AFFECTNET_CODES and code < num_classes:
    return code
  return None


def rafdb_to_canonical(label: int) -> int:
  """RAF-DB label 1..7 -> canonical id."""
  if label not in RAFDB_CODES:
    raise KeyError(f"RAF-DB label {label} outside 1..7")
  return emotion_index(RAFDB_CODES[label])


def canonical_to_rafdb(index: int) -> int:
  """Canonical id -> RAF-DB label 1..7 (contempt has none)."""
  name = EMOTIONS[index]
  for label, n in RAFDB_CODES.items():
    if n == name:
      return label
  raise KeyError(f"RAF-DB has no label for {name!r}")


def au_columns(aus: tuple[int, ...], of: tuple[int, ...] = SYNTH_AUS) -> list[int]:
  """Positions of `aus` within the AU tuple `of` (e.g. BP4D's 12 inside SYNTH_AUS)."""
  missing = [a for a in aus if a not in of]
  if missing:
    raise KeyError(f"AUs {missing} not in {of}")
  return [of.index(a) for a in aus]
