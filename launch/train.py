"""Trains a model from a config: `python launch/train.py --config=configs/X.py[:args] --workdir=W`.

Thin by design: flags, multi-host initialisation, then one call into the package.
Overrides: `--config.optim.lr=3e-4` and so on (ml_collections config flags).
"""

from absl import app, flags, logging
from ml_collections import config_flags

from norface_jax.training import entry

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and logs.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  entry.train(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
