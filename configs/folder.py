r"""Stage 2 on a folder dataset: a user's labelled photos, prepared from a manifest CSV.

  python launch/prepare_data.py --dataset=folder --manifest=my_study.csv --image_size=256
  python launch/train.py --config=configs/folder.py:task=fer,name=my_study --workdir=W
  python launch/evaluate.py --cv --folds=all --config=configs/folder.py:task=fer,name=my_study \
      --workdir=W      # leave-one-subject-out (or the prepared k folds), mean over folds

The label space is the prepared dataset's (its emotions, or its AU columns). Args after
the colon: task=fer|au_detection|au_intensity, name=<manifest name> (needed when several
folder datasets are prepared), data_dir=DIR, and every arg of the other stage-2 configs
(runlocal, fold=K, variant=B/16, norm=..., steps=N, select=val|last, ...). Without a
normalized stream given (norm=precomputed with normalized_dir, or norm=online with
stage1=DIR), it trains the original stream alone.
"""

from norface_jax.configlib import parse_arg, split_arg
from norface_jax.training.stage2_config import task_config


def get_config(arg=None):
  own, rest = split_arg(arg, ("task", "name", "data_dir"))
  a = parse_arg(own, task="fer", name="", data_dir="~/tensorflow_datasets")
  c = task_config(rest, task=a.task, dataset="folder")
  c.data.prepared_config = a.name
  c.data.data_dir = a.data_dir
  if c.data.normalization == "precomputed" and not c.data.normalized_dir:
    c.model.streams = ("orig",)
    c.data.normalization = "none"
  return c
