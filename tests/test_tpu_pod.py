"""The TPU pod launcher's commands (dry run) and the pod mesh configs."""

import os
import shlex
import subprocess
import sys

import pytest

from norface_jax import configlib, tpu_pod
from norface_jax.training import sharding

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_dry_run_prints_create_copy_setup_train():
  out = subprocess.run(
      [sys.executable, os.path.join(ROOT, "launch", "tpu_pod.py"), "--name=nf", "--zone=us-central2-b",
       "--accelerator_type=v4-32", "--config=configs/affectnet_fer.py:variant=B/16",
       "--workdir=gs://bucket/run", "--spot", "--dry_run"],
      capture_output=True, text=True, timeout=60, cwd=ROOT,
      env={**os.environ, "PYTHONPATH": ROOT})
  assert out.returncode == 0, out.stderr
  lines = [shlex.split(l) for l in out.stdout.strip().splitlines()]
  assert lines[0][:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "nf"]
  assert "--accelerator-type=v4-32" in lines[0] and "--spot" in lines[0]
  assert lines[1][4] == "scp" and "--worker=all" in lines[1]
  assert "--worker=all" in lines[3]
  train = [a for a in lines[3] if a.startswith("--command=")][0]
  assert "launch/train.py" in train and "--distributed" in train
  assert "--config=configs/affectnet_fer.py:variant=B/16,fsdp=4" in train
  assert "--workdir=gs://bucket/run" in train


def test_pod_needs_gcs_workdir_and_known_topology():
  with pytest.raises(ValueError, match="gs://"):
    tpu_pod.PodJob("n", "z", "v4-32", "configs/x.py", "/tmp/w")
  with pytest.raises(ValueError, match="v9-1"):
    tpu_pod.PodJob("n", "z", "v9-1", "configs/x.py", "gs://b/w")


def test_pod_mesh_args_build_a_3d_mesh():
  c = configlib.load_config(os.path.join(ROOT, "configs", "affectnet_fer.py") + ":fsdp=2,tp=2")
  mesh = sharding.make_mesh(c.mesh)
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "model": 2}
  assert sharding.data_parallel_size(mesh) == 4
  c = configlib.load_config(os.path.join(ROOT, "configs", "affectnet_fer.py") + ":slices=2")
  assert c.mesh_dcn[0] == ("data", 2)
  with pytest.raises(ValueError, match="slice_index"):
    sharding.make_mesh(c.mesh, dcn_config=c.mesh_dcn)  # CPU devices are not TPU slices.
