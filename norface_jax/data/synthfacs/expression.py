"""SynthFACS expressions: AU intensity vectors from emotion prototypes (FACS.md).

Intensities are integers 0..5 (as the datasets code them) in `labels.SYNTH_AUS` order.
"""

from __future__ import annotations

import numpy as np

from norface_jax.data import labels

# emotion -> (core AUs, optional AUs taken with probability 0.5).
PROTOTYPES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "neutral": ((), ()),
    "happiness": ((6, 12), (25,)),
    "sadness": ((1, 4, 15), (17,)),
    "surprise": ((1, 2, 5, 26), (25,)),
    "fear": ((1, 2, 4, 5, 7, 20, 26), ()),
    "disgust": ((9, 15), (10, 17)),
    "anger": ((4, 5, 7, 23), (24,)),
    "contempt": ((12, 14), ()),  # one side only: see `asymmetry`.
}
EXTRA_AU_PROB = 0.3  # chance of one extra, non-prototypical AU per frame.


def au_index(au: int) -> int:
  """Column of an AU in SYNTH_AUS order."""
  return labels.SYNTH_AUS.index(au)


def sample_expression(rng: np.random.Generator, emotion: int,
                      level: float | None = None) -> tuple[np.ndarray, float]:
  """AU intensities (17,) float32 in 0..5 and a mouth asymmetry in [-1, 1] for an emotion.

  level scales the whole expression (onset/apex/offset in a video); intensities get
  per-AU noise, optional prototype AUs and occasionally one extra AU.
  """
  name = labels.EMOTIONS[emotion]
  core, optional = PROTOTYPES[name]
  if level is None:
    level = rng.uniform(0.45, 1.0)
  au = np.zeros(len(labels.SYNTH_AUS), np.float32)
  for a in core:
    au[au_index(a)] = level * rng.uniform(2.0, 5.4)
  for a in optional:
    if rng.uniform() < 0.5:
      au[au_index(a)] = level * rng.uniform(1.0, 4.5)
  if rng.uniform() < EXTRA_AU_PROB:
    au[rng.integers(len(au))] += rng.uniform(0.6, 3.0)
  au = np.clip(np.round(au), 0, 5).astype(np.float32)
  asym = 0.0
  if name == "contempt":
    asym = float(rng.choice([-1.0, 1.0]))
  return au, asym


def occurrence(intensity: np.ndarray, threshold: float = 1.0) -> np.ndarray:
  """0/1 occurrence from 0..5 intensities (BP4D: >= 1; DISFA: >= 2)."""
  return (intensity >= threshold).astype(np.float32)
