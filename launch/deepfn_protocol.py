"""Runs the DeepFN protocol (paper table 5).

  python launch/deepfn_protocol.py --config=configs/deepfn_bp4d.py[:args] --workdir=W

Writes W/deepfn_table.md (table 5), W/deepfn_protocol.png (bars with standard errors),
W/deepfn_examples.png and W/records.json (every per-subject score).
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from norface_jax import console
from norface_jax.deepfn import protocol

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=False)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for the table, chart and records.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  console.setup()
  config = _CONFIG.value
  config.command = "python " + " ".join(a for a in sys.argv if not a.startswith("--workdir"))
  protocol.run(config, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
