"""Prepares a real dataset once from its raw download (TFDS builder, array_record files).

  python launch/prepare_data.py --dataset=bp4d --manual_dir=/data/BP4D --data_dir=~/tensorflow_datasets
  python launch/prepare_data.py --dataset=folder --manifest=my_study.csv [--num_folds=5]

Writes `<data_dir>/<dataset>/<config>/1.0.0/` (config: `default`, RAF-DB's `aligned` /
`original`, or a folder dataset's manifest name), which `configs/*.py` read through `config.data.data_dir`. Raw layouts:
docs/datasets.md. Bad input stops with `<file>:<line>: ...`; `--skip_bad` skips,
counts and reports it instead. A folder dataset (`norface_jax/data/readers/folder.py`:
path, subject, emotion or AU columns) aligns uncropped photos on the face MTCNN finds.
"""

from absl import app, flags

from norface_jax import console
from norface_jax.data import prepared

_DATASET = flags.DEFINE_enum("dataset", None, list(prepared.DATASETS), "Dataset to prepare.")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", "", "The raw download (its native layout).")
_MANIFEST = flags.DEFINE_string("manifest", "", "Folder dataset: the manifest CSV.")
_DATA_DIR = flags.DEFINE_string("data_dir", "~/tensorflow_datasets", "Where prepared data goes.")
_SIZE = flags.DEFINE_integer("image_size", 256, "Side of the stored face crops.")
_MARGIN = flags.DEFINE_float("margin", 0.1, "Face box growth per side (fraction of the box).")
_ALIGN = flags.DEFINE_bool("align", True, "5-point alignment where landmarks exist.")
_SKIP_BAD = flags.DEFINE_bool("skip_bad", False, "Skip, count and report bad items.")
_FORMAT = flags.DEFINE_enum("image_format", "jpeg", ["jpeg", "png"], "Stored image encoding.")
_FOLD_FILE = flags.DEFINE_string("fold_file", "", "Fold parts, one line each (BP4D/BP4D+/DISFA).")
_NUM_FOLDS = flags.DEFINE_integer("num_folds", 0, "Seeded folds: BP4D+ (0 = 3, as the paper), "
                                   "folder dataset (0 = leave-one-subject-out).")
_FOLD_SEED = flags.DEFINE_integer("fold_seed", 0, "BP4D+ / folder dataset fold seed.")
_LIST_FILE = flags.DEFINE_string("list_file", "", "BP4D list variant: relative image paths.")
_LABEL_FILE = flags.DEFINE_string("label_file", "", "BP4D list variant: 0/1 label lines.")
_FRAME_OFFSET = flags.DEFINE_integer("frame_offset", 0, "DISFA: image number = label frame + this.")
_VARIANT = flags.DEFINE_enum("variant", "aligned", ["aligned", "original"], "RAF-DB images.")
flags.mark_flags_as_required(["dataset"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  console.setup()
  if _DATASET.value == "folder" and not (_MANIFEST.value or _MANUAL_DIR.value):
    raise app.UsageError("--dataset=folder needs --manifest=M.csv")
  if _DATASET.value != "folder" and not _MANUAL_DIR.value:
    raise app.UsageError(f"--dataset={_DATASET.value} needs --manual_dir (the raw download)")
  options = prepared.PrepareOptions(
      image_size=_SIZE.value, margin=_MARGIN.value, align=_ALIGN.value, skip_bad=_SKIP_BAD.value,
      image_format=_FORMAT.value, fold_file=_FOLD_FILE.value, num_folds=_NUM_FOLDS.value,
      fold_seed=_FOLD_SEED.value, list_file=_LIST_FILE.value, label_file=_LABEL_FILE.value,
      frame_offset=_FRAME_OFFSET.value, variant=_VARIANT.value, manifest=_MANIFEST.value)
  finder = None
  if _DATASET.value == "folder":
    from norface_jax.detection import crops
    finder = crops.FaceFinder(max_faces=1)
  prepared.prepare(_DATASET.value, _MANUAL_DIR.value, _DATA_DIR.value, options, face_finder=finder)


if __name__ == "__main__":
  app.run(main)
