"""Creates a Cloud TPU pod VM and runs a config on every worker.

  python launch/tpu_pod.py --name=norface --zone=us-central2-b --accelerator_type=v4-32 \
      --config=configs/affectnet_fer.py --workdir=gs://BUCKET/affectnet_fer --dry_run

`--dry_run` prints the gcloud commands instead of running them. A preempted spot pod
is resumed by running the train command again (it restores the last checkpoint).
"""

import shlex
import subprocess

from absl import app, flags

from norface_jax import tpu_pod

_NAME = flags.DEFINE_string("name", None, "TPU VM name.")
_ZONE = flags.DEFINE_string("zone", None, "GCP zone, e.g. us-central2-b.")
_TYPE = flags.DEFINE_enum("accelerator_type", "v4-32", list(tpu_pod.TOPOLOGIES), "Topology.")
_CONFIG = flags.DEFINE_string("config", None, "Config path[:args], as for launch/train.py.")
_WORKDIR = flags.DEFINE_string("workdir", None, "gs:// workdir.")
_PROJECT = flags.DEFINE_string("project", "", "GCP project.")
_REPO = flags.DEFINE_string("repo", "", "git URL to clone on the workers (default: scp this checkout).")
_SPOT = flags.DEFINE_bool("spot", False, "Spot (preemptible) capacity.")
_SLICES = flags.DEFINE_integer("slices", 1, "Multi-slice: data parallel across this many slices.")
_STEP = flags.DEFINE_enum("step", "all", ["all", "create", "copy", "setup", "train", "delete"],
                          "Run one step only.")
_DRY = flags.DEFINE_bool("dry_run", False, "Print the commands, run nothing.")
flags.mark_flags_as_required(["name", "zone", "config", "workdir"])


def main(argv):
  del argv
  job = tpu_pod.PodJob(name=_NAME.value, zone=_ZONE.value, accelerator_type=_TYPE.value,
                       config=_CONFIG.value, workdir=_WORKDIR.value, project=_PROJECT.value,
                       repo=_REPO.value, spot=_SPOT.value, slices=_SLICES.value)
  steps = {"create": job.create, "copy": job.copy, "setup": job.setup, "train": job.train,
           "delete": job.delete}
  commands = job.commands() if _STEP.value == "all" else [steps[_STEP.value]()]
  for cmd in commands:
    print(shlex.join(cmd))
    if not _DRY.value:
      subprocess.run(cmd, check=True)


if __name__ == "__main__":
  app.run(main)
