"""What every dataset reader shares: the example record, CSV/list parsing, bad input.

Bad input (FORMATS.md): a missing or corrupt image, a label row with the wrong column
count, an unknown subject in a fold list, an empty split. Each is reported as
`<file>:<line>: <what>`; preparation stops on the first one, or with `skip_bad` skips
the item, counts it and prints the count at the end. Nothing is dropped silently:
items dropped on purpose (unknown labels, classes outside the label space) are counted
by reason too.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import os
from typing import Any, Iterator

import numpy as np


class BadInputError(ValueError):
  """Bad raw data; the message starts with `<file>:<line>:` (line 0 = the whole file)."""

  def __init__(self, path: str, line: int, what: str):
    self.path, self.line, self.what = path, line, what
    super().__init__(f"{path}:{line}: {what}" if line else f"{path}: {what}")


@dataclasses.dataclass
class Example:
  """One labelled face before preparation.

  path: relative to the raw root, as in the raw layout (pairs with normalized faces).
  image_path: absolute path of the image file. Labels absent for a dataset are None.
  source, line: where the labels came from (for error messages).
  """
  path: str
  image_path: str
  subject: str = ""
  session: str = ""
  frame: int = -1
  au: np.ndarray | None = None
  au_intensity: np.ndarray | None = None
  emotion: int = -1
  box: tuple[float, float, float, float] | None = None  # x, y, w, h in pixels.
  landmarks: np.ndarray | None = None  # (68, 2) x, y pixels.
  valence: float = float("nan")
  arousal: float = float("nan")
  source: str = ""
  line: int = 0


class Problems:
  """Raises bad input, or (skip_bad) counts it; also counts deliberate drops by reason."""

  def __init__(self, skip_bad: bool = False, keep: int = 20):
    self.skip_bad = skip_bad
    self.bad: list[BadInputError] = []
    self.dropped: collections.Counter = collections.Counter()
    self._keep = keep

  def bad_input(self, path: str, line: int, what: str) -> None:
    err = BadInputError(path, line, what)
    if not self.skip_bad:
      raise err
    self.bad.append(err)

  def drop(self, reason: str, n: int = 1) -> None:
    self.dropped[reason] += n

  def summary(self) -> str:
    lines = []
    if self.bad:
      lines.append(f"skipped {len(self.bad)} bad item(s) (skip_bad):")
      lines += [f"  {e}" for e in self.bad[:self._keep]]
      if len(self.bad) > self._keep:
        lines.append(f"  ... and {len(self.bad) - self._keep} more")
    for reason, n in sorted(self.dropped.items()):
      lines.append(f"dropped {n} item(s): {reason}")
    return "\n".join(lines) if lines else "no bad or dropped items"

  def as_dict(self) -> dict[str, Any]:
    return {"skipped_bad": len(self.bad), "bad": [str(e) for e in self.bad[:self._keep]],
            "dropped": dict(self.dropped)}


def require_file(path: str, what: str) -> None:
  if not os.path.isfile(path):
    raise BadInputError(path, 0, f"missing: expected {what}")


def require_dir(path: str, what: str) -> None:
  if not os.path.isdir(path):
    raise BadInputError(path, 0, f"missing: expected a directory with {what}")


def read_rows(path: str, problems: Problems, *, columns: int | None = None,
              header: bool = False, delimiter: str = ",") -> Iterator[tuple[int, list[str]]]:
  """(line number, fields) of a CSV/space-separated file; wrong column counts reported.

  With header=True the first row fixes the column count and is yielded as line 1.
  Blank lines are skipped.
  """
  with open(path, newline="") as f:
    if delimiter == " ":
      rows = (line.split() for line in f)
    else:
      rows = csv.reader(f, delimiter=delimiter)
    for lineno, row in enumerate(rows, 1):
      if not row or all(not c.strip() for c in row):
        continue
      if header and lineno == 1 and columns is None:
        columns = len(row)
        yield lineno, row
        continue
      if columns is not None and len(row) != columns:
        problems.bad_input(path, lineno, f"{len(row)} columns, expected {columns}")
        continue
      yield lineno, row


def parse_int(value: str, path: str, line: int, what: str, problems: Problems) -> int | None:
  try:
    return int(float(value))
  except ValueError:
    problems.bad_input(path, line, f"{what} {value!r} is not a number")
    return None


@dataclasses.dataclass
class FoldParts:
  """Subject-exclusive parts; fold k tests part k and trains on the others.

  source: where the parts come from ("<file>" or "built-in ..."); the part k was read
  from line `lines[k]` of it.
  """
  parts: list[list[str]]
  source: str
  lines: list[int]

  def to_dict(self) -> dict[str, Any]:
    return {"parts": self.parts, "source": self.source}


def read_fold_file(path: str) -> FoldParts:
  """One part per line, subjects separated by spaces or commas; `#` starts a comment."""
  require_file(path, "a fold list (one part per line, subjects separated by spaces)")
  parts, lines = [], []
  with open(path) as f:
    for lineno, line in enumerate(f, 1):
      line = line.split("#", 1)[0].replace(",", " ").strip()
      if line:
        parts.append(line.split())
        lines.append(lineno)
  if not parts:
    raise BadInputError(path, 0, "no fold parts in the file")
  return FoldParts(parts, path, lines)


def check_folds(folds: FoldParts, found: set[str], problems: Problems,
                known: set[str] | None = None) -> FoldParts:
  """Checks a fold list against the subjects found in the data.

  A listed subject is unknown when it is neither found nor one of the dataset's `known`
  subjects (a known subject without data is fine: partial downloads); a found subject in
  no part, a subject in two parts and a part with no data (an empty split) are errors.
  """
  seen: dict[str, int] = {}
  out = []
  for part, line in zip(folds.parts, folds.lines):
    kept = []
    for s in part:
      if s in seen:
        problems.bad_input(folds.source, line, f"subject {s} is also in the part on line {seen[s]}")
        continue
      seen[s] = line
      if s not in found and (known is None or s not in known):
        problems.bad_input(folds.source, line, f"unknown subject {s!r} (not in the data: "
                                               f"{', '.join(sorted(found)[:8])}...)")
        continue
      kept.append(s)
    out.append(kept)
  missing = sorted(found - set(seen))
  if missing:
    problems.bad_input(folds.source, 0, f"subjects in the data but in no fold part: {missing}")
  for part, line in zip(out, folds.lines):
    if not any(s in found for s in part):
      raise BadInputError(folds.source, line,
                          "empty split: no subject of this fold part is in the data")
  return FoldParts(out, folds.source, folds.lines)


def seeded_folds(subjects: list[str], n: int, seed: int) -> list[list[str]]:
  """n random subject-exclusive parts (sorted within), reproducible from the seed."""
  if len(subjects) < n:
    raise ValueError(f"{len(subjects)} subjects cannot make {n} folds")
  order = np.random.default_rng(seed).permutation(len(subjects))
  subjects = sorted(subjects)
  return [sorted(subjects[i] for i in part) for part in np.array_split(order, n)]


def write_fold_file(path: str, parts: list[list[str]], comment: str = "") -> None:
  with open(path, "w") as f:
    if comment:
      f.write(f"# {comment}\n")
    f.writelines(" ".join(p) + "\n" for p in parts)


@dataclasses.dataclass
class Records:
  """A read dataset: examples by split, fold lists (AU datasets), metadata."""
  splits: dict[str, list[Example]]
  folds: FoldParts | None = None
  attributes: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
  info: dict[str, Any] = dataclasses.field(default_factory=dict)

  def __len__(self) -> int:
    return sum(len(v) for v in self.splits.values())


# The paper's skin-type groups (DeepFN sec. 4): Fitzpatrick I-II lighter (0), V-VI darker
# (1); III-IV belong to neither group (-1) and are left out of the skin analyses.
def skin_group(fitzpatrick: int) -> int:
  if not 1 <= fitzpatrick <= 6:
    return -1
  return 0 if fitzpatrick <= 2 else 1 if fitzpatrick >= 5 else -1


def read_attributes(path: str, problems: Problems) -> dict[str, dict[str, int]]:
  """Optional side file of group attributes: CSV with a `subject` column, then `gender`
  (0 male, 1 female) and either `skin` (0 lighter, 1 darker) or `fitzpatrick` (1-6,
  grouped by `skin_group`); ints, -1 unknown."""
  out: dict[str, dict[str, int]] = {}
  if not os.path.isfile(path):
    return out
  rows = read_rows(path, problems, header=True)
  _, head = next(rows, (0, []))
  if not head or head[0] != "subject":
    raise BadInputError(path, 1, f"header {head}; expected subject,gender,skin")
  for line, row in rows:
    vals = {}
    for name, v in zip(head[1:], row[1:]):
      iv = parse_int(v, path, line, name, problems)
      if iv is None:
        break
      vals[name] = iv
    else:
      if "fitzpatrick" in vals:
        vals["skin"] = skin_group(vals.pop("fitzpatrick"))
      out[row[0]] = vals
  return out


def index_frames(folder: str, ext: tuple[str, ...]) -> dict[int, str]:
  """Frame number -> file name in a folder of `<frame>.<ext>` (zero padding allowed)."""
  out: dict[int, str] = {}
  if not os.path.isdir(folder):
    return out
  for name in os.listdir(folder):
    stem, e = os.path.splitext(name)
    if e.lower() in ext and stem.isdigit():
      out[int(stem)] = name
  return out


def split_by_folds(examples: list[Example], folds: FoldParts) -> dict[str, list[Example]]:
  """Examples grouped into `part1`..`partK` by subject."""
  part_of = {s: k for k, p in enumerate(folds.parts) for s in p}
  splits: dict[str, list[Example]] = {f"part{k + 1}": [] for k in range(len(folds.parts))}
  for ex in examples:
    if ex.subject in part_of:
      splits[f"part{part_of[ex.subject] + 1}"].append(ex)
  return splits
