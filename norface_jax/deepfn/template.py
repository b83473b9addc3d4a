"""Template choice (paper sec. 3.2): the most expressive subject.

Per subject, the number of activations of each AU; the template is the subject whose
median over the AUs is the highest. `by="rate"` divides by the subject's frame count
(for sources where subjects have very different numbers of frames). Ties go to the
larger total activation, then to the first subject.
"""

from __future__ import annotations

import numpy as np


def median_activation(au: np.ndarray, subject: np.ndarray, by: str = "count") -> dict[int, float]:
  """subject id -> median over AUs of that subject's AU activation count (or rate)."""
  au = np.asarray(au) > 0.5
  subject = np.asarray(subject)
  if au.ndim != 2 or len(au) != len(subject):
    raise ValueError(f"au (N, A) and subject (N,) expected, got {au.shape}, {subject.shape}")
  if by not in ("count", "rate"):
    raise ValueError(f"by must be 'count' or 'rate', not {by!r}")
  out = {}
  for s in np.unique(subject):
    rows = au[subject == s]
    per_au = rows.sum(0).astype(np.float64)
    if by == "rate":
      per_au /= len(rows)
    out[int(s)] = float(np.median(per_au))
  return out


def choose_template(au: np.ndarray, subject: np.ndarray, by: str = "count") -> int:
  """The subject id with the highest median AU activation."""
  med = median_activation(au, subject, by)
  au = np.asarray(au) > 0.5
  subject = np.asarray(subject)
  total = {s: float(au[subject == s].sum()) for s in med}
  return max(med, key=lambda s: (med[s], total[s], -s))
