"""Evaluates trained stage-2 workdirs, or runs k-fold cross-validation.

  python launch/evaluate.py --workdir=W                       # its own test split
  python launch/evaluate.py --workdir=W --test_dataset=disfa  # cross-dataset
  python launch/evaluate.py --cv --config=configs/bp4d_au.py --workdir=W   # 3 folds, mean
  python launch/evaluate.py --cv --folds=all --config=configs/folder.py:task=fer,name=my_study --workdir=W
      # every fold of a prepared folder dataset (leave-one-subject-out or k-fold)
"""

from absl import app, flags
from ml_collections import config_flags

from norface_jax import console
from norface_jax.data import registry
from norface_jax.inference import evaluate

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config (needed for --cv).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir (per fold: <workdir>/fold<k> with --cv).")
_CV = flags.DEFINE_bool("cv", False, "Train and evaluate every fold and report the mean.")
_FOLDS = flags.DEFINE_list("folds", ["0", "1", "2"], "Folds for --cv ('all': every prepared fold).")
_TEST = flags.DEFINE_string("test_dataset", "", "Evaluate on another dataset's test split.")
_WHICH = flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which checkpoint.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  del argv
  console.setup()
  if _CV.value:
    if _CONFIG.value is None:
      raise app.UsageError("--cv needs --config")
    folds = (range(registry.fold_count(_CONFIG.value.data)) if _FOLDS.value == ["all"]
             else [int(f) for f in _FOLDS.value])
    evaluate.cross_validate(_CONFIG.value, _WORKDIR.value, list(folds))
  else:
    evaluate.evaluate_workdir(_WORKDIR.value, config=_CONFIG.value, which=_WHICH.value,
                              test_dataset=_TEST.value)


if __name__ == "__main__":
  app.run(main)
