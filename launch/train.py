"""Trains a model from a config: `python launch/train.py --config=configs/X.py[:args] --workdir=W`.

Thin by design: flags, multi-host initialisation, then one call into the package.
Overrides: `--config.optim.lr=3e-4` and so on (ml_collections config flags; an
unknown key is an error). SIGTERM checkpoints the current step and exits 0; the same
command resumes from it.

Multi-process on one machine (CPU collectives):
  python launch/train.py ... --coordinator_address=127.0.0.1:12345 --num_processes=2 --process_id=0
Cloud TPU pod (every worker runs the same command): add --distributed.
"""

from absl import app, flags
from ml_collections import config_flags

from norface_jax import console
from norface_jax.training import entry, multihost

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and logs.")
_COORD = flags.DEFINE_string("coordinator_address", "", "host:port of process 0 (multi-process).")
_NPROC = flags.DEFINE_integer("num_processes", 0, "Number of processes (multi-process).")
_PID = flags.DEFINE_integer("process_id", -1, "This process's id (multi-process).")
_AUTO = flags.DEFINE_bool("distributed", False, "jax.distributed.initialize() with auto-detection "
                          "(Cloud TPU pods, SLURM).")
_STOP_AT = flags.DEFINE_integer("stop_at", 0, "Checkpoint and stop after this step (0 = run to the end).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  console.setup()
  multihost.initialize(coordinator_address=_COORD.value, num_processes=_NPROC.value,
                       process_id=_PID.value, auto=_AUTO.value)
  entry.train(_CONFIG.value, _WORKDIR.value, stop_at=_STOP_AT.value or None)


if __name__ == "__main__":
  app.run(main)
