r"""DeepFN protocol (table 5) on a folder dataset of AU-labelled photos.

  python launch/prepare_data.py --dataset=folder --manifest=my_study.csv
  python launch/deepfn_protocol.py --config=configs/deepfn_folder.py:name=my_study \
      --workdir=workdirs/deepfn_my_study

The manifest needs AU columns, and `gender` / `skin` columns for those group analyses
(docs/datasets.md). Args after the colon: name=<manifest name> (needed when several
folder datasets are prepared), cross=DATASET (the
dataset split's other side: bp4d, disfa, or folder:<name>; without it the dataset
analyses are left out), and the other DeepFN args (runlocal, tiny, reps=N, ae_steps=N,
epochs=N, mode=program|loop, save=..., data_dir=DIR).
"""

from norface_jax.configlib import parse_arg, split_arg
from norface_jax.deepfn.config import protocol_config


def get_config(arg=None):
  own, rest = split_arg(arg, ("name", "cross"))
  a = parse_arg(own, name="", cross="")
  # Without a name: the one folder dataset prepared under data_dir (an error names them
  # when there are several).
  dataset = f"folder:{a.name}" if a.name else "folder"
  c = protocol_config(rest, dataset=dataset, cross_dataset=a.cross)
  if not a.cross:
    c.protocol.groups = tuple(g for g in c.protocol.groups if g != "dataset")
  return c
