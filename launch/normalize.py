"""Normalizes a dataset with a trained stage-1 F_nor into the layout stage 2 reads.

  python launch/normalize.py --checkpoint=workdirs/stage1 --out=DIR [--target=synthfacs:F003] \
      [--config=configs/bp4d_au.py:synthetic] [--split=train] [--batch_size=64]

`--checkpoint` is a stage-1 workdir; `--config` names the dataset to normalize (any
reader `registry.make_source` knows; default: the stage-1 workdir's own data), and
`--target` is an image path or `synthfacs:<subject>` (default: the stage-1 config's
`target`, the face it was evaluated with). Writes `OUT/<item path>` (or
`OUT/synthfacs/<split>/<index>.png` for in-memory SynthFACS items); then train stage 2
with `norm=precomputed,normalized_dir=DIR`.
"""

from absl import app, flags
from ml_collections import config_flags

from norface_jax import console
from norface_jax.inference import normalize

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config naming the dataset (optional).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Stage-1 workdir.")
_TARGET = flags.DEFINE_string("target", None, "Target face: image path or synthfacs:<subject> "
                              "(default: the stage-1 config's target).")
_OUT = flags.DEFINE_string("out", None, "Output folder.")
_SPLITS = flags.DEFINE_list("split", ["train", "test"], "Splits to normalize.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Global batch (divisible by the devices).")
_MAX = flags.DEFINE_integer("max_items", 0, "Stop after this many items per split (0 = all).")
flags.mark_flags_as_required(["checkpoint", "out"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  console.setup()
  normalize.normalize_dataset(_CHECKPOINT.value, _TARGET.value, _OUT.value,
                              data_config=_CONFIG.value.data if _CONFIG.value else None,
                              splits=_SPLITS.value, batch_size=_BATCH.value,
                              max_items=_MAX.value)


if __name__ == "__main__":
  app.run(main)
