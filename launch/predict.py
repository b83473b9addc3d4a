"""Predicts AUs or emotions for a folder of face crops with a trained workdir.

  python launch/predict.py --workdir=W --images=DIR --out=preds.csv [--normalized=DIR]
"""

from absl import app, flags

from norface_jax import console
from norface_jax.inference import predict

_WORKDIR = flags.DEFINE_string("workdir", None, "Trained stage-2 workdir.")
_IMAGES = flags.DEFINE_string("images", None, "Folder of face crops (searched recursively).")
_OUT = flags.DEFINE_string("out", "preds.csv", "Output CSV.")
_NORMALIZED = flags.DEFINE_string("normalized", "", "Folder of normalized faces, same relative paths.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Images per batch.")
_WHICH = flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which checkpoint.")
_SKIP = flags.DEFINE_bool("skip_bad", False, "Skip (and count) unreadable images instead of stopping.")
flags.mark_flags_as_required(["workdir", "images"])


def main(argv):
  del argv
  console.setup()
  predict.predict_folder(_WORKDIR.value, _IMAGES.value, _OUT.value, normalized=_NORMALIZED.value,
                         batch_size=_BATCH.value, which=_WHICH.value, skip_bad=_SKIP.value)


if __name__ == "__main__":
  app.run(main)
