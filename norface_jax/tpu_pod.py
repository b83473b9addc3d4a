"""Cloud TPU pod commands: create the TPU VM, set it up, run the same command on every worker.

Every worker of a pod runs `launch/train.py ... --distributed`; `jax.distributed`
finds the coordinator itself, Grain gives each process its slice of every global
batch, and Orbax writes one checkpoint to the Cloud Storage workdir.
"""

from __future__ import annotations

import dataclasses
import shlex

# Named topologies: chips, hosts, and the mesh args that suit them (data-parallel with
# FSDP inside a host's chips for the bigger ViTs).
TOPOLOGIES: dict[str, dict[str, object]] = {
    "v4-8": dict(chips=4, hosts=1, version="tpu-ubuntu2204-base", mesh_args=""),
    "v4-32": dict(chips=16, hosts=4, version="tpu-ubuntu2204-base", mesh_args="fsdp=4"),
    "v4-128": dict(chips=64, hosts=16, version="tpu-ubuntu2204-base", mesh_args="fsdp=4"),
    "v5litepod-16": dict(chips=16, hosts=4, version="v2-alpha-tpuv5-lite", mesh_args="fsdp=4"),
    "v5litepod-64": dict(chips=64, hosts=16, version="v2-alpha-tpuv5-lite", mesh_args="fsdp=8"),
    "v5p-32": dict(chips=16, hosts=4, version="v2-alpha-tpuv5", mesh_args="fsdp=4"),
}


@dataclasses.dataclass
class PodJob:
  name: str
  zone: str
  accelerator_type: str
  config: str                   # e.g. configs/affectnet_fer.py:variant=B/16
  workdir: str                  # gs://bucket/run
  project: str = ""
  repo: str = ""                # git URL; empty = copy this checkout with scp.
  spot: bool = False
  slices: int = 1
  extra_flags: tuple[str, ...] = ()

  def __post_init__(self):
    if self.accelerator_type not in TOPOLOGIES:
      raise ValueError(f"unknown --accelerator_type={self.accelerator_type!r}; known: "
                       f"{', '.join(TOPOLOGIES)}")
    if not self.workdir.startswith("gs://"):
      raise ValueError(f"--workdir={self.workdir!r}: a pod needs a Cloud Storage workdir (gs://...) "
                       "that every worker can reach")

  def _base(self, verb: str) -> list[str]:
    cmd = ["gcloud", "compute", "tpus", "tpu-vm", verb, self.name, f"--zone={self.zone}"]
    if self.project:
      cmd.append(f"--project={self.project}")
    return cmd

  def create(self) -> list[str]:
    topo = TOPOLOGIES[self.accelerator_type]
    cmd = self._base("create") + [f"--accelerator-type={self.accelerator_type}",
                                  f"--version={topo['version']}"]
    if self.spot:
      cmd.append("--spot")
    return cmd

  def copy(self) -> list[str]:
    if self.repo:
      return self.ssh(f"git clone {shlex.quote(self.repo)} norface_jax || "
                      "(cd norface_jax && git pull)")
    return (["gcloud", "compute", "tpus", "tpu-vm", "scp", "--recurse", ".",
             f"{self.name}:~/norface_jax", f"--zone={self.zone}", "--worker=all"]
            + ([f"--project={self.project}"] if self.project else []))

  def ssh(self, command: str) -> list[str]:
    return self._base("ssh") + ["--worker=all", f"--command={command}"]

  def setup(self) -> list[str]:
    return self.ssh("cd ~/norface_jax && bash launch/setup_env.sh && "
                    ".venv/bin/pip install -q 'jax[tpu]==0.10.2'")

  def train(self) -> list[str]:
    topo = TOPOLOGIES[self.accelerator_type]
    config = self.config
    mesh_args = [a for a in [str(topo["mesh_args"]), f"slices={self.slices}" if self.slices > 1 else ""] if a]
    if mesh_args:
      config += ("," if ":" in config else ":") + ",".join(mesh_args)
    flags = [f"--config={config}", f"--workdir={self.workdir}", "--distributed", *self.extra_flags]
    return self.ssh("cd ~/norface_jax && .venv/bin/python launch/train.py "
                    + " ".join(shlex.quote(f) for f in flags))

  def delete(self) -> list[str]:
    return self._base("delete") + ["--quiet"]

  def commands(self) -> list[list[str]]:
    return [self.create(), self.copy(), self.setup(), self.train()]
