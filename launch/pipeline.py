"""Runs the whole Norface method on SynthFACS and writes `<workdir>/report.md`.

  python launch/pipeline.py --config=configs/synthetic_pipeline.py --workdir=workdirs/pipeline

Interrupted? Run the same command again: finished steps are skipped and the running
one resumes from its checkpoint.
"""

from absl import app, flags
from ml_collections import config_flags

from norface_jax import console
from norface_jax import pipeline

_CONFIG = config_flags.DEFINE_config_file("config", None, "Pipeline config.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "workdirs/pipeline", "Where every step keeps its result.")
flags.mark_flags_as_required(["config"])


def main(argv):
  del argv
  console.setup()
  result = pipeline.Pipeline(_CONFIG.value, _WORKDIR.value).run()
  print(f"Report: {result['report']}")


if __name__ == "__main__":
  app.run(main)
