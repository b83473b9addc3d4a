"""From `config.data` to a random-access source: SynthFACS or a prepared real dataset.

Also decides where the normalized face I_n comes from:
- `none`: no I_n (the model must use the original stream only, "w/o Idn");
- `oracle` (SynthFACS only): the exact target-identity rendering of each face, i.e. the
  same AUs on the fixed target subject with the target's pose and plain background — the
  ideal output of a perfect stage 1, an upper bound for identity normalization;
- `precomputed`: a folder that mirrors the dataset's relative image paths with the
  normalized faces (written by `launch/normalize.py`, or the Norface authors' release);
- `online`: a frozen stage-1 generator inside the step (wired in the trainer).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any

import numpy as np

from norface_jax.data import labels
from norface_jax.data.images import load_image, paired_relative_path

NORMALIZATION_MODES = ("none", "oracle", "precomputed", "online")


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  name: str
  title: str
  detection_aus: tuple[int, ...] = ()
  intensity_aus: tuple[int, ...] = ()
  fer: bool = False
  layout: str = ""  # What the raw download looks like (for the "not found" message).


DATASETS: dict[str, DatasetSpec] = {
    "bp4d": DatasetSpec("bp4d", "BP4D", labels.BP4D_DETECTION_AUS, labels.BP4D_INTENSITY_AUS,
                        layout="<root>/<subject>/<task>/<frame>.jpg and AU_OCC/<subject>_<task>.csv"),
    "bp4dplus": DatasetSpec("bp4dplus", "BP4D+", labels.BP4D_DETECTION_AUS, labels.BP4D_INTENSITY_AUS,
                            layout="<root>/<subject>/<task>/<frame>.jpg and AU_OCC/<subject>_<task>.csv"),
    "disfa": DatasetSpec("disfa", "DISFA", labels.DISFA_DETECTION_AUS, labels.DISFA_INTENSITY_AUS,
                         layout="<root>/<subject>/<frame>.png and ActionUnit_Labels/<subject>/<subject>_au<N>.txt"),
    "affectnet": DatasetSpec("affectnet", "AffectNet", fer=True,
                             layout="Manually_Annotated_file_lists/{training,validation}.csv and "
                                    "Manually_Annotated_Images/"),
    "rafdb": DatasetSpec("rafdb", "RAF-DB", fer=True,
                         layout="EmoLabel/list_patition_label.txt and Image/aligned/"),
}


class DataNotFoundError(FileNotFoundError):
  """A real dataset is not where the config says; the message says how to prepare it."""


FOLDER_LAYOUT = ("a manifest CSV of image path, subject and labels; prepare it with "
                 "launch/prepare_data.py --dataset=folder --manifest=M.csv")


def spec(name: str, data_config: Any = None) -> DatasetSpec:
  """The dataset's label space. A folder dataset's comes from its prepared.json (found
  through `data_config`: data_dir and prepared_config)."""
  if name == "folder":
    return _folder_spec(data_config)
  if name not in DATASETS:
    raise KeyError(f"config.data.dataset={name!r}; known: {', '.join(DATASETS)}, folder")
  return DATASETS[name]


def _folder_spec(data_config: Any) -> DatasetSpec:
  from norface_jax.data import prepared  # TFDS is imported only for real datasets.
  if data_config is None:
    raise ValueError("the folder dataset's labels come from its prepared data: pass the "
                     "data config")
  data_dir = os.path.expanduser(data_config.data_dir)
  try:
    found = prepared.find_prepared(data_dir, "folder", data_config.get("prepared_config", ""))
  except FileNotFoundError as e:
    raise DataNotFoundError(f"no prepared folder dataset: {e}. Make it with\n  python "
                            f"launch/prepare_data.py --dataset=folder --manifest=M.csv "
                            f"--data_dir={data_config.data_dir}") from None
  with open(os.path.join(found, prepared.META_FILE)) as f:
    info = json.load(f)["info"]
  title = f"folder dataset {os.path.basename(os.path.dirname(found))!r}"
  return DatasetSpec("folder", title, tuple(info["aus"]), tuple(info["intensity_aus"]),
                     fer=info["labels"] == "emotion", layout=FOLDER_LAYOUT)


def label_names(data_config: Any, task: str, dataset: str | None = None) -> tuple[str, ...]:
  """The output label space of `task` on the (training) dataset."""
  s = spec(dataset or data_config.dataset, data_config)
  if task == "fer":
    if not s.fer and not data_config.synthetic:
      raise ValueError(f"{s.title} has no emotion labels; use an AU task")
    return labels.EMOTIONS[:data_config.num_classes]
  aus = s.detection_aus if task == "au_detection" else s.intensity_aus
  if not aus:
    raise ValueError(f"{s.title} has no {task} labels; use task 'fer'")
  return tuple(f"AU{a}" for a in aus)


def fold_count(data_config: Any) -> int:
  """How many subject-exclusive folds the prepared dataset has (a folder dataset
  prepared leave-one-subject-out: one per subject)."""
  from norface_jax.data import prepared
  if data_config.synthetic:
    raise ValueError("SynthFACS folds are given explicitly (--folds=0,1,2)")
  spec(data_config.dataset, data_config)
  found = prepared.find_prepared(os.path.expanduser(data_config.data_dir), data_config.dataset,
                                 data_config.get("prepared_config", ""))
  with open(os.path.join(found, prepared.META_FILE)) as f:
    folds = json.load(f)["folds"]
  if not folds:
    raise ValueError(f"{found} has no fold parts (a fixed train/test split)")
  return len(folds["parts"])


def test_dataset(data_config: Any) -> str:
  return data_config.get("test_dataset", "") or data_config.dataset


def eval_columns(data_config: Any, task: str) -> tuple[tuple[str, ...], np.ndarray | None]:
  """Label names evaluated and the prediction columns they come from (cross-dataset)."""
  train = label_names(data_config, task)
  other = test_dataset(data_config)
  if other == data_config.dataset or task == "fer":
    return train, None
  test = label_names(data_config, task, other)
  common = tuple(n for n in test if n in train)
  if not common:
    raise ValueError(f"{data_config.dataset} and {other} share no {task} labels")
  return common, np.array([train.index(n) for n in common])


def eval_task(task: Any, data_config: Any) -> Any:
  """The evaluation task: the training task restricted to labels the test set has."""
  names, columns = eval_columns(data_config, task.name)
  return task if columns is None else dataclasses.replace(task, label_names=names)


SPLITS = ("train", "val", "test", "all")


def make_source(data_config: Any, split: str, *, task: str) -> Any:
  """A random-access source of dict items (`image`, labels, optional `image_norm`).

  `val` is a seeded, subject-exclusive share (`data.val_share`) of the dataset's training
  part, and `train` is the rest of it (all of it when `val_share` is 0): model selection
  happens on `val`, never on `test`. Items of `val` keep their training paths. `all` is
  every item of the dataset (its training and test parts). With `data.test_dataset` set
  to another dataset, training reads the whole source dataset and `test` the whole
  target dataset, as the papers' cross-dataset tables do (no fold parts).
  """
  if split not in SPLITS:
    raise ValueError(f"split {split!r}; expected one of {SPLITS}")
  mode = data_config.normalization
  if mode not in NORMALIZATION_MODES:
    raise ValueError(f"config.data.normalization={mode!r}; expected one of {NORMALIZATION_MODES}")
  part = "train" if split == "val" else split  # The dataset's own split that is read.
  if test_dataset(data_config) != data_config.dataset:
    part = "all"  # Cross-dataset (Norface tables 5-6): the whole source, the whole target.
  dataset = test_dataset(data_config) if split == "test" else data_config.dataset
  if data_config.synthetic:
    source = _synthfacs_source(data_config, split, part, dataset, oracle=(mode == "oracle"))
  else:
    if mode == "oracle":
      raise ValueError("config.data.normalization='oracle' exists only for SynthFACS "
                       "(add `synthetic`), since it renders the true target-identity face")
    source = _real_source(data_config, part, dataset)
  share = float(data_config.get("val_share", 0.0))
  if split == "val" and share <= 0:
    raise ValueError("the 'val' split needs config.data.val_share > 0 (the share of the "
                     "training subjects held out for model selection)")
  if part == "train" and share > 0:
    keep = holdout_indices(subject_ids(source), share, int(data_config.get("val_seed", 0)))
    source = Subset(source, keep[split], f"{split} ({share:.0%} of training subjects held out)")
  if mode == "precomputed":
    source = PairedFolderSource(source, data_config.normalized_dir, data_config.image_size, part)
  # mode == "online": the trainer makes I_n inside its step (data knows nothing of models).
  if dataset != data_config.dataset and task != "fer":
    names, _ = eval_columns(data_config, task)
    key = "au" if task == "au_detection" else "au_intensity"
    source = SelectLabels(source, key, label_names(data_config, task, dataset), names)
  return source


def _synthfacs_source(data_config: Any, split: str, part: str, dataset: str, *,
                      oracle: bool) -> Any:
  """`split` (train/val/test/all) of the config's preset(s), read from preset split `part`."""
  preset = (data_config.get("test_preset", "") or dataset) if split == "test" else data_config.preset
  if preset == "":
    preset = dataset
  frames = data_config.frames_per_subject
  if split == "test" and data_config.get("test_frames_per_subject", 0):
    frames = data_config.test_frames_per_subject
  return _cached_synthfacs(
      preset, part, int(data_config.fold), int(data_config.get("seed", 0)),
      int(data_config.image_size), float(data_config.identity_bias), int(frames or 0),
      int(data_config.num_identities or 0), int(data_config.num_classes),
      int(data_config.target_subject) if oracle else -1)


@functools.lru_cache(maxsize=8)
def _cached_synthfacs(preset: str, split: str, fold: int, seed: int, size: int,
                      identity_bias: float, frames: int, num_identities: int,
                      num_classes: int, target: int) -> Any:
  """SynthFACS renders every item when a source is built; one process that trains many
  runs on the same faces (the pipeline, a seed sweep) renders them once. Sources are
  read-only."""
  from norface_jax.data.synthfacs import source as synth_source
  source = synth_source.SynthFACSSource(
      preset=preset, split=split, fold=fold, seed=seed, size=size,
      identity_bias=identity_bias, frames_per_subject=frames or None,
      num_identities=num_identities or None, num_classes=num_classes,
      normalized_target=target if target >= 0 else None)
  for array in (getattr(source, "_cache", None) or {}).values():
    array.setflags(write=False)  # Shared between runs: a consumer writing in place errors.
  return source


def _real_source(data_config: Any, split: str, dataset: str) -> Any:
  from norface_jax.data import prepared  # TFDS is imported only for real datasets.
  if dataset == "folder":
    _folder_spec(data_config)  # Not prepared: says how to prepare it.
  s = spec(dataset, data_config)
  data_dir = os.path.expanduser(data_config.data_dir)
  base = os.path.join(data_dir, dataset)
  config = data_config.get("prepared_config", "")
  try:
    found = prepared.find_prepared(data_dir, dataset, config)
  except FileNotFoundError:
    raise DataNotFoundError(
        f"{s.title} is not prepared: expected the prepared dataset in {base!r} "
        f"(<config>/<version>/ with {prepared.META_FILE}; config.data.data_dir="
        f"{data_config.data_dir!r}). {s.title} is licensed and cannot be "
        f"downloaded here: obtain it from its authors (raw layout: {s.layout}; see "
        f"docs/datasets.md), then prepare it once with\n"
        f"  python launch/prepare_data.py --dataset={dataset} --manual_dir=<raw download> "
        f"--data_dir={data_config.data_dir}\n"
        f"or run on SynthFACS with the same label space by adding `synthetic` to the config "
        f"args (e.g. --config=configs/<name>.py:synthetic).") from None
  return prepared.source(data_dir, dataset, split, data_config.fold, data_config.image_size,
                         num_classes=data_config.num_classes if s.fer else None,
                         config=os.path.basename(os.path.dirname(found)),
                         equalize=data_config.get("equalize", False))


class SelectLabels:
  """Reorders/subsets an AU label vector to `names` (cross-dataset evaluation)."""

  def __init__(self, source: Any, key: str, have: tuple[str, ...], names: tuple[str, ...]):
    self.source, self.key = source, key
    self.columns = np.array([have.index(n) for n in names])

  def __len__(self) -> int:
    return len(self.source)

  def __repr__(self) -> str:
    return f"SelectLabels({self.source!r}, {self.key!r}, columns={self.columns.tolist()})"

  def __getitem__(self, index: int) -> dict[str, Any]:
    item = dict(self.source[index])
    item[self.key] = np.asarray(item[self.key])[self.columns]
    return item


class PairedFolderSource:
  """Adds `image_norm` read from `root/<paired_relative_path(item, split)>`."""

  def __init__(self, source: Any, root: str, size: int, split: str = "train"):
    if not root:
      raise ValueError("config.data.normalization='precomputed' needs config.data.normalized_dir "
                       "(a folder written by launch/normalize.py)")
    if not os.path.isdir(root):
      raise FileNotFoundError(f"config.data.normalized_dir={root!r} is not a directory")
    self.source, self.root, self.size, self.split = source, root, size, split

  def __len__(self) -> int:
    return len(self.source)

  def __repr__(self) -> str:
    return (f"PairedFolderSource({self.source!r}, root={self.root!r}, size={self.size}, "
            f"split={self.split!r})")

  def __getitem__(self, index: int) -> dict[str, Any]:
    item = dict(self.source[index])
    path = os.path.join(self.root, paired_relative_path(item, self.split))
    if not os.path.exists(path):
      raise FileNotFoundError(f"normalized face missing: {path} (for item {index})")
    item["image_norm"] = load_image(path, self.size)
    return item


class SiblingSource:
  """Adds `sibling`: the image of another item of the same subject (stage 1's D_res).

  D_res's real pair is [I_t, another real face of I_t's subject]: the target's identity
  with some other expression (and, in the wild, pose). Each item's sibling is drawn
  once from `(seed, index)`, among the other items of its subject; items without a
  subject (id < 0) or alone in theirs get their own image. `subject_ids` is one id per
  item (the `subject` the items carry), read without decoding images.
  """

  def __init__(self, source: Any, subject_ids: np.ndarray, seed: int = 0):
    ids = np.asarray(subject_ids)
    if len(ids) != len(source):
      raise ValueError(f"{len(ids)} subject ids for a source of {len(source)} items")
    self.source, self.seed = source, int(seed)
    self.partner = np.arange(len(ids))
    for s in np.unique(ids[ids >= 0]):
      members = np.flatnonzero(ids == s)
      if len(members) < 2:
        continue
      rng = np.random.default_rng([self.seed, int(s)])
      # A random derangement-free draw: item k of the subject takes member (k + d) with
      # d uniform in 1..n-1, so it is never its own sibling.
      shift = rng.integers(1, len(members), size=len(members))
      self.partner[members] = members[(np.arange(len(members)) + shift) % len(members)]
    self.alone = int(np.sum(self.partner == np.arange(len(ids))))

  def __len__(self) -> int:
    return len(self.source)

  def __repr__(self) -> str:
    return f"SiblingSource({self.source!r}, seed={self.seed}, alone={self.alone})"

  def __getitem__(self, index: int) -> dict[str, Any]:
    item = dict(self.source[index])
    j = int(self.partner[int(index) % len(self)])
    item["sibling"] = item["image"] if j == int(index) % len(self) else self.source[j]["image"]
    return item


def holdout_indices(ids: np.ndarray | None, share: float, seed: int) -> dict[str, np.ndarray]:
  """{'train', 'val'} item indices: `share` of the subjects (seeded) go to 'val'.

  Subject-exclusive: every item of a held-out subject is in 'val' and none in 'train'.
  Items without a subject id (FER datasets in the wild, id -1) are split item by item
  with the same share, which is the best a dataset without identities allows.
  """
  if not 0.0 < share < 1.0:
    raise ValueError(f"config.data.val_share={share}; expected a share in (0, 1)")
  if ids is None:
    raise ValueError("a validation split needs the training source's subject ids "
                     "(`subject_ids()`); set config.data.val_share=0 for this source")
  ids = np.asarray(ids)
  rng = np.random.default_rng([int(seed), 7919])
  val = np.zeros(len(ids), bool)
  subjects = np.unique(ids[ids >= 0])
  if len(subjects):
    n_val = min(max(1, int(round(share * len(subjects)))), len(subjects) - 1)
    if n_val < 1:  # A single training subject.
      raise ValueError(f"{len(subjects)} training subject(s): too few to hold one out for "
                       "validation; set config.data.val_share=0 and config.eval.select='last'")
    held = rng.choice(subjects, size=n_val, replace=False)
    val |= np.isin(ids, held)
  unknown = np.flatnonzero(ids < 0)
  if len(unknown):
    val[rng.choice(unknown, size=int(round(share * len(unknown))), replace=False)] = True
  if not val.any() or val.all():
    raise ValueError(f"{len(ids)} training items: config.data.val_share={share} leaves "
                     f"{'no validation' if not val.any() else 'no training'} item; set "
                     "config.data.val_share=0 and config.eval.select='last'")
  return {"train": np.flatnonzero(~val), "val": np.flatnonzero(val)}


class Subset:
  """The items `indices` of `source`, in that order (train / validation parts)."""

  def __init__(self, source: Any, indices: np.ndarray, name: str = ""):
    self.source, self.indices, self.name = source, np.asarray(indices, np.int64), name

  def __len__(self) -> int:
    return len(self.indices)

  def __repr__(self) -> str:
    return f"Subset({self.source!r}, {len(self)} items{', ' + self.name if self.name else ''})"

  def __getitem__(self, index: int) -> dict[str, Any]:
    return self.source[int(self.indices[index])]

  def subject_ids(self) -> np.ndarray | None:
    ids = subject_ids(self.source)
    return None if ids is None else ids[self.indices]


def subject_ids(source: Any) -> np.ndarray | None:
  """One subject id per item of `source` (its `subject_ids()`, or that of the source it
  wraps item for item), or None if it has none."""
  fn = getattr(source, "subject_ids", None)
  if fn is None:
    inner = getattr(source, "source", None)
    return None if inner is None else subject_ids(inner)
  return np.asarray(fn())
