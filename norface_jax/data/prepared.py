"""Prepared datasets: a TFDS builder per real dataset, and the Grain source over them.

`prepare(dataset, manual_dir, data_dir)` reads the raw layout (`readers/`), crops each
face (`faces.py`), and writes a TFDS dataset of `array_record` files with encoded
images and metadata to `<data_dir>/<dataset>/<config>/<version>/`, plus
`prepared.json` (folds, subjects, what was skipped or dropped) and `folds.txt` there.
AU datasets get one split per fold part (`part1`..`partK`); FER datasets `train`/`test`.

TFDS runs here without TensorFlow: `download_and_prepare` and `as_data_source` need
none. `PreparedSource` reads the records by random access (image decoding is skipped in
TFDS and done with PIL, then resized to the config's size), so `grain.DataLoader` can
shard it per process and read it from worker processes.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import re
from typing import Any

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from norface_jax.data import faces
from norface_jax.data import labels
from norface_jax.data import readers
from norface_jax.data.images import load_image
from norface_jax.data.readers import common

VERSION = "1.0.0"
DATASETS = ("bp4d", "bp4dplus", "disfa", "affectnet", "rafdb", "folder")
AU_DATASETS = ("bp4d", "bp4dplus", "disfa")
META_FILE = "prepared.json"


@dataclasses.dataclass
class PrepareOptions:
  """How faces are cut and stored, and how the raw data is read.

  image_size: side of the stored crops (the source resizes to the config's size).
  margin: AffectNet face box growth per side, as a fraction of the box.
  align: 5-point similarity alignment where landmarks exist (AffectNet 68 points,
    RAF-DB original images' 5 points); otherwise the box (or the centred square).
  skip_bad: skip, count and report bad items instead of stopping at the first.
  Reader options: fold_file, num_folds, fold_seed (BP4D+; the folder dataset, where
  num_folds 0 is leave-one-subject-out), list_file + label_file (BP4D lists),
  frame_offset (DISFA), variant (RAF-DB aligned|original), manifest (the folder dataset's
  CSV, `readers/folder.py`).
  """
  image_size: int = 256
  margin: float = 0.1
  align: bool = True
  skip_bad: bool = False
  image_format: str = "jpeg"
  quality: int = 95
  fold_file: str = ""
  num_folds: int = 0
  fold_seed: int = 0
  list_file: str = ""
  label_file: str = ""
  frame_offset: int = 0
  variant: str = "aligned"
  manifest: str = ""

  def reader_options(self, dataset: str) -> dict[str, Any]:
    if dataset in ("bp4d", "bp4dplus"):
      return dict(fold_file=self.fold_file, num_folds=self.num_folds, fold_seed=self.fold_seed,
                  list_file=self.list_file, label_file=self.label_file)
    if dataset == "disfa":
      return dict(fold_file=self.fold_file, frame_offset=self.frame_offset)
    if dataset == "rafdb":
      return dict(variant=self.variant)
    if dataset == "folder":
      return dict(manifest=self.manifest, num_folds=self.num_folds, fold_seed=self.fold_seed)
    return {}


def config_name(dataset: str, options: PrepareOptions) -> str:
  """RAF-DB's image variant; a folder dataset's manifest name (`my_study.csv` ->
  `my_study`); otherwise `default`."""
  if dataset == "rafdb":
    return options.variant
  if dataset == "folder":
    stem = os.path.splitext(os.path.basename(options.manifest or "manifest.csv"))[0]
    return re.sub(r"[^a-z0-9_]", "_", stem.lower()) or "manifest"
  return "default"


def _label_sizes(dataset: str) -> tuple[int, int]:
  if dataset == "disfa":
    return len(labels.DISFA_DETECTION_AUS), len(labels.DISFA_INTENSITY_AUS)
  return len(labels.BP4D_DETECTION_AUS), len(labels.BP4D_INTENSITY_AUS)


def features(dataset: str, image_format: str = "jpeg",
             au_sizes: tuple[int, int] | None = None) -> tfds.features.FeaturesDict:
  """The stored record of one face (`au_sizes`: the folder dataset's AU label sizes, or
  None for its emotion labels)."""
  f = {
      "image": tfds.features.Image(shape=(None, None, 3), encoding_format=image_format),
      "path": tfds.features.Text(),        # Relative to the raw root, as in the raw layout.
      "subject": tfds.features.Text(),
      "subject_id": np.int32,              # Index into prepared.json's subjects (-1 none).
      "gender": np.int32,                  # 1 female, 0 male, -1 unknown.
      "skin": np.int32,                    # Group skin type from a side file, -1 unknown.
  }
  if dataset in AU_DATASETS or au_sizes is not None:
    n_det, n_int = au_sizes if au_sizes is not None else _label_sizes(dataset)
    f.update(session=tfds.features.Text(), frame=np.int32,
             au=tfds.features.Tensor(shape=(n_det,), dtype=np.float32),
             au_intensity=tfds.features.Tensor(shape=(n_int,), dtype=np.float32))
  else:
    f.update(emotion=np.int32, valence=np.float32, arousal=np.float32)
  return tfds.features.FeaturesDict(f)


def crop_face(image: np.ndarray, ex: common.Example, options: PrepareOptions) -> np.ndarray:
  """The stored face: aligned from landmarks, else the box crop, else the centred square."""
  size = options.image_size
  if options.align and ex.landmarks is not None:
    pts = ex.landmarks if len(ex.landmarks) == 5 else faces.five_points(ex.landmarks)
    return faces.align_five_points(image, pts, size, zoom=1.0 / (1.0 + 2.0 * options.margin))
  if ex.box is not None:
    return faces.crop_box(image, ex.box, options.margin, size)
  return faces.resize(faces.center_square(image), size)


def _encode(image: np.ndarray, options: PrepareOptions) -> bytes:
  buf = io.BytesIO()
  if options.image_format == "jpeg":
    Image.fromarray(image).save(buf, format="JPEG", quality=options.quality)
  else:
    Image.fromarray(image).save(buf, format="PNG")
  return buf.getvalue()


class _PreparedBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared body of the per-dataset builders (`DATASET` picks the reader)."""

  VERSION = tfds.core.Version(VERSION)
  DATASET = ""
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="default")]
  MANUAL_DOWNLOAD_INSTRUCTIONS = ("The raw download, in the layout of shared FORMATS.md, "
                                  "passed as --manual_dir.")
  # No download checksums: skips TFDS's source-file lookup, which needs the
  # `importlib_resources` backport (not installed) for builders inside a package.
  url_infos = None

  def __init__(self, *, options: PrepareOptions | None = None, face_finder: Any = None,
               **kwargs):
    self.options = options or PrepareOptions()
    self.problems = common.Problems(skip_bad=self.options.skip_bad)
    self.records: common.Records | None = None
    self.subjects: list[str] = []
    self.face_finder = face_finder
    super().__init__(**kwargs)

  @property
  def au_labels(self) -> bool:
    return self.DATASET in AU_DATASETS

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, description=f"{self.DATASET}, prepared faces",
                                 features=features(self.DATASET, self.options.image_format))

  def _split_generators(self, dl_manager):
    root = os.fspath(dl_manager.manual_dir)
    extra = {"face_finder": self.face_finder} if self.face_finder is not None else {}
    self.records = readers.read(self.DATASET, root, self.problems,
                                **self.options.reader_options(self.DATASET), **extra)
    self.subjects = sorted({ex.subject for exs in self.records.splits.values() for ex in exs
                            if ex.subject} if self.au_labels or self.DATASET == "folder" else set())
    return {name: self._generate_examples(exs) for name, exs in self.records.splits.items()}

  def _generate_examples(self, examples):
    ids = {s: i for i, s in enumerate(self.subjects)}
    attrs = self.records.attributes
    for ex in examples:
      try:
        image = load_image(ex.image_path)
      except (FileNotFoundError, ValueError) as e:
        self.problems.bad_input(ex.source, ex.line, str(e))
        continue
      a = attrs.get(ex.subject, {})
      record = {"image": _encode(crop_face(image, ex, self.options), self.options),
                "path": ex.path, "subject": ex.subject, "subject_id": ids.get(ex.subject, -1),
                "gender": a.get("gender", -1), "skin": a.get("skin", -1)}
      if self.au_labels:
        record.update(session=ex.session, frame=ex.frame, au=ex.au, au_intensity=ex.au_intensity)
      else:
        record.update(emotion=ex.emotion, valence=ex.valence, arousal=ex.arousal)
      yield ex.path, record


class Bp4d(_PreparedBuilder, skip_registration=True):
  """BP4D: 12 detection AUs, 5 intensity AUs, standard 3 folds."""
  name = "bp4d"
  DATASET = "bp4d"


class Bp4dplus(_PreparedBuilder, skip_registration=True):
  """BP4D+: 12 detection AUs, seeded subject-exclusive folds saved with the data."""
  name = "bp4dplus"
  DATASET = "bp4dplus"


class Disfa(_PreparedBuilder, skip_registration=True):
  """DISFA: 8 detection AUs (intensity >= 2), 12 intensity AUs, standard 3 folds."""
  name = "disfa"
  DATASET = "disfa"


class Affectnet(_PreparedBuilder, skip_registration=True):
  """AffectNet: 8 canonical emotions (7-class runs drop contempt when reading)."""
  name = "affectnet"
  DATASET = "affectnet"


class Rafdb(_PreparedBuilder, skip_registration=True):
  """RAF-DB: 7 emotions, aligned (default) or original images."""
  name = "rafdb"
  DATASET = "rafdb"
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="aligned"),
                     tfds.core.BuilderConfig(name="original")]


class Folder(_PreparedBuilder, skip_registration=True):
  """A user's labelled photos from a manifest CSV (`readers/folder.py`): emotions or AUs,
  subject-exclusive parts (leave-one-subject-out by default); uncropped photos are
  aligned on the face the `face_finder` finds (launch/prepare_data.py passes MTCNN)."""
  name = "folder"
  DATASET = "folder"

  def __init__(self, *, options: PrepareOptions | None = None, **kwargs):
    from norface_jax.data.readers import folder
    options = options or PrepareOptions()
    path = options.manifest
    common.require_file(path, "a manifest CSV (--manifest)")
    with open(path, newline="") as f:
      header = next(csv.reader(f), None)
    if header is None:
      raise common.BadInputError(path, 0, "empty manifest")
    self.spec = folder.label_columns(header, path)
    name = config_name("folder", options)
    kwargs["config"] = tfds.core.BuilderConfig(name=name)
    super().__init__(options=options, **kwargs)

  @property
  def au_labels(self) -> bool:
    return self.spec["kind"] == "au"

  def _info(self) -> tfds.core.DatasetInfo:
    sizes = (len(self.spec["aus"]), len(self.spec["intensity_aus"])) if self.au_labels else None
    return tfds.core.DatasetInfo(builder=self, description="folder dataset, prepared faces",
                                 features=features("folder", self.options.image_format, sizes))


BUILDERS = {"bp4d": Bp4d, "bp4dplus": Bp4dplus, "disfa": Disfa, "affectnet": Affectnet,
            "rafdb": Rafdb, "folder": Folder}


def prepare(dataset: str, manual_dir: str, data_dir: str,
            options: PrepareOptions | None = None, face_finder: Any = None) -> str:
  """Prepares `dataset` from its raw download; returns the prepared directory.

  `face_finder(images) -> [[Face, ...], ...]` (`detection.crops.FaceFinder`) aligns
  folder-dataset photos that have neither a face box nor landmarks.

  Bad input stops with `<file>:<line>: ...` unless options.skip_bad; either way what was
  skipped or dropped is printed and saved in prepared.json.
  """
  if dataset not in BUILDERS:
    raise KeyError(f"unknown dataset {dataset!r}; known: {', '.join(BUILDERS)}")
  options = options or PrepareOptions()
  if dataset == "folder":
    if not options.manifest:
      options = dataclasses.replace(options, manifest=os.path.join(manual_dir, "manifest.csv"))
    manual_dir = manual_dir or os.path.dirname(os.path.abspath(options.manifest))
  if not os.path.isdir(manual_dir):
    raise FileNotFoundError(f"--manual_dir={manual_dir!r} is not a directory")
  kwargs = dict(face_finder=face_finder) if dataset == "folder" else {}
  if dataset != "folder":
    kwargs["config"] = config_name(dataset, options)
  builder = BUILDERS[dataset](data_dir=data_dir, options=options, file_format="array_record",
                              **kwargs)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  out = os.fspath(builder.data_dir)
  if builder.records is None:  # Already prepared: nothing was read.
    print(f"{dataset} already prepared in {out}")
    return out
  splits = {name: builder.info.splits[name].num_examples for name in builder.records.splits}
  for name, n in splits.items():
    if n == 0:
      raise common.BadInputError(manual_dir, 0, f"empty split {name!r} after skipping bad items")
  folds = builder.records.folds
  meta = {"dataset": dataset, "version": VERSION, "config": config_name(dataset, options),
          "splits": splits, "subjects": builder.subjects,
          "folds": folds.to_dict() if folds else None, "info": builder.records.info,
          "problems": builder.problems.as_dict(), "options": dataclasses.asdict(options)}
  if not builder.au_labels:
    meta["emotions_per_split"] = {
        name: np.bincount(_emotions(out, name), minlength=len(labels.EMOTIONS)).tolist()
        for name in splits}
  with open(os.path.join(out, META_FILE), "w") as f:
    json.dump(meta, f, indent=1)
  if folds:
    common.write_fold_file(os.path.join(out, "folds.txt"), folds.parts,
                           f"{dataset} fold parts from {folds.source}; fold k tests line k+1")
  print(f"{dataset}: prepared {splits} in {out}")
  print(builder.problems.summary())
  return out


def has_au_labels(meta: dict[str, Any]) -> bool:
  """Whether a prepared dataset (its prepared.json) holds AU labels, not emotions."""
  return meta["dataset"] in AU_DATASETS or meta.get("info", {}).get("labels") == "au"


def _emotions(prepared_dir: str, split: str) -> np.ndarray:
  ds = tfds.builder_from_directory(prepared_dir).as_data_source(
      split=split, decoders={"image": tfds.decode.SkipDecoding()})
  return np.array([int(ds[i]["emotion"]) for i in range(len(ds))], np.int32)


def find_prepared(data_dir: str, dataset: str, config: str = "") -> str:
  """`<data_dir>/<dataset>/<config>/<newest version>`; FileNotFoundError if absent."""
  base = os.path.join(os.path.expanduser(data_dir), dataset)
  configs = [config] if config else [c.name for c in BUILDERS[dataset].BUILDER_CONFIGS]
  if dataset == "folder" and not config:  # Named after their manifests: one, or say which.
    configs = sorted(os.listdir(base)) if os.path.isdir(base) else []
    if len(configs) > 1:
      raise FileNotFoundError(f"several folder datasets under {base}: {configs}; pick one "
                              "with config.data.prepared_config (configs/folder.py: name=...)")
  for c in configs:
    d = os.path.join(base, c)
    if os.path.isdir(d):
      versions = sorted((v for v in os.listdir(d) if os.path.isfile(os.path.join(d, v, META_FILE))),
                        key=lambda v: tuple(int(x) for x in v.split(".")))
      if versions:
        return os.path.join(d, versions[-1])
  raise FileNotFoundError(f"no prepared {dataset} (config {configs}) under {base}")


def fold_splits(meta: dict[str, Any], split: str, fold: int) -> list[str]:
  """The TFDS splits of `split` ('train'|'test'|'all'): fold k tests part k+1, trains on
  the rest; 'all' is every prepared split (the whole dataset, e.g. for DeepFN)."""
  if split == "all":
    return sorted(meta["splits"])
  if meta["folds"] is None:
    if split not in meta["splits"]:
      raise ValueError(f"split {split!r}; the prepared data has {sorted(meta['splits'])}")
    return [split]
  n = len(meta["folds"]["parts"])
  if not 0 <= fold < n:
    raise ValueError(f"config.data.fold={fold} outside 0..{n - 1} ({meta['dataset']} has {n} folds)")
  if split == "test":
    return [f"part{fold + 1}"]
  if split == "train":
    return [f"part{k + 1}" for k in range(n) if k != fold]
  raise ValueError(f"split {split!r}; expected train, test or all")


_SUBJECT_IDS: dict[tuple[str, tuple[str, ...]], np.ndarray] = {}  # Prepared data is read-only.


class PreparedSource:
  """Random-access source over prepared splits; items are NumPy dicts for the trainer.

  Items: image uint8 (size, size, 3); au float32 (n_det,) 0/1 and au_intensity float32
  (n_int,) (AU datasets); emotion int32 canonical (FER; `num_classes`=7 leaves out
  contempt); subject, gender, skin int32 (-1 unknown); path str (relative, raw layout).
  Picklable (the TFDS reader is reopened in each Grain worker).
  """

  def __init__(self, prepared_dir: str, splits: list[str], size: int,
               num_classes: int | None = None, equalize: bool = False):
    self.dir, self.splits, self.size, self.equalize = prepared_dir, list(splits), size, equalize
    with open(os.path.join(prepared_dir, META_FILE)) as f:
      self.meta = json.load(f)
    self.au_dataset = has_au_labels(self.meta)
    self._ds = None
    self.indices = None
    if not self.au_dataset and num_classes and num_classes < len(labels.EMOTIONS):
      emotions = np.concatenate([_emotions(prepared_dir, s) for s in self.splits])
      self.indices = np.flatnonzero(emotions < num_classes)
    if len(self) == 0:
      raise ValueError(f"{prepared_dir} splits {self.splits} hold no item")

  def _source(self):
    if self._ds is None:
      self._ds = tfds.builder_from_directory(self.dir).as_data_source(
          split="+".join(self.splits), decoders={"image": tfds.decode.SkipDecoding()})
    return self._ds

  def __getstate__(self):
    state = dict(self.__dict__)
    state["_ds"] = None
    return state

  def subject_ids(self) -> np.ndarray:
    """Each item's `subject` (-1 unknown), read without decoding the images (once per
    process and set of splits: the train and validation parts both need them)."""
    key = (self.dir, tuple(self.splits))
    if key not in _SUBJECT_IDS:
      ds = self._source()
      _SUBJECT_IDS[key] = np.array([int(ds[i]["subject_id"]) for i in range(len(ds))], np.int32)
    ids = _SUBJECT_IDS[key]
    return ids[self.indices] if self.indices is not None else ids

  def __len__(self) -> int:
    if self.indices is not None:
      return len(self.indices)
    return sum(self.meta["splits"][s] for s in self.splits)

  def __getitem__(self, i: int) -> dict[str, Any]:
    i = int(i)
    if not 0 <= i < len(self):
      raise IndexError(f"index {i} outside a source of {len(self)} items")
    r = self._source()[int(self.indices[i]) if self.indices is not None else i]
    with Image.open(io.BytesIO(r["image"])) as im:
      image = faces.resize(np.asarray(im.convert("RGB")), self.size)
    if self.equalize:
      image = faces.equalize_histogram(image)
    path = r["path"].decode() if isinstance(r["path"], bytes) else str(r["path"])
    item = {"image": image, "path": path, "subject": np.int32(r["subject_id"]),
            "gender": np.int32(r["gender"]), "skin": np.int32(r["skin"])}
    if self.au_dataset:
      item.update(au=np.asarray(r["au"], np.float32),
                  au_intensity=np.asarray(r["au_intensity"], np.float32),
                  frame=np.int32(r["frame"]))
    else:
      item["emotion"] = np.int32(r["emotion"])
    return item

  def __repr__(self) -> str:
    return f"PreparedSource({self.dir!r}, splits={self.splits}, n={len(self)}, size={self.size})"


def source(data_dir: str, dataset: str, split: str, fold: int, size: int, *,
           num_classes: int | None = None, config: str = "", equalize: bool = False) -> PreparedSource:
  """The prepared `split` of fold `fold` (AU datasets) as a `PreparedSource`."""
  d = find_prepared(data_dir, dataset, config)
  with open(os.path.join(d, META_FILE)) as f:
    meta = json.load(f)
  return PreparedSource(d, fold_splits(meta, split, fold), size, num_classes, equalize)


# The Norface authors' normalized datasets: faces redrawn on a target identity, files
# named as the originals; RAF-DB comes with several targets, one subfolder each.

def normalized_targets(root: str) -> list[str]:
  """The subfolders of a normalized release (one per target identity where it has several)."""
  if not os.path.isdir(root):
    raise FileNotFoundError(f"normalized faces: {root!r} is not a directory")
  return sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))


def normalized_dir(root: str, target: str = "") -> str:
  """`root/target` (one target identity's faces), or `root` itself without a target."""
  if not target:
    return root
  d = os.path.join(root, target)
  if not os.path.isdir(d):
    raise FileNotFoundError(f"normalized target {target!r} not in {root} "
                            f"(subfolders: {normalized_targets(root)})")
  return d


class PairedByName:
  """Adds `image_norm` from a normalized release matched by file name (not full path).

  For releases that do not mirror the raw folder layout; names must be unique there.
  (`registry.PairedFolderSource` pairs by the full relative path instead.)
  """

  def __init__(self, source: Any, root: str, size: int, target: str = ""):
    self.source, self.size = source, size
    self.root = normalized_dir(root, target)
    self.by_name: dict[str, str] = {}
    for d, _, files in os.walk(self.root):
      for name in files:
        key = os.path.splitext(name)[0]
        if key in self.by_name:
          raise ValueError(f"normalized name {key!r} twice: {self.by_name[key]} and {os.path.join(d, name)}")
        self.by_name[key] = os.path.join(d, name)

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, i: int) -> dict[str, Any]:
    item = dict(self.source[i])
    key = os.path.splitext(os.path.basename(str(item["path"])))[0]
    if key not in self.by_name:
      raise FileNotFoundError(f"no normalized face named {key}.* under {self.root} "
                              f"(for {item['path']})")
    item["image_norm"] = load_image(self.by_name[key], self.size)
    return item
