"""Two processes x 4 CPU devices vs one process x 8; SIGTERM; kill -9; NaN; bad config.

The subprocess tests run `launch/train.py` exactly as a user would.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from norface_jax.training import checkpointing, stage2, writers
from tests.conftest import FAST_COMPILE, assert_params_close
from tests.test_train_stage2 import ROOT, tiny_config

TINY = os.path.join(ROOT, "tests", "configs", "tiny.py")


def _env(devices):
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices} {FAST_COMPILE}"
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  return env


def _train_cmd(workdir, *extra, arg=""):
  return [sys.executable, os.path.join(ROOT, "launch", "train.py"),
          f"--config={TINY}{arg}", f"--workdir={workdir}", *extra]


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _run_two_processes(workdir, *extra, arg=""):
  port = _free_port()
  procs = [subprocess.Popen(
      _train_cmd(workdir, f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                 f"--process_id={i}", *extra, arg=arg),
      env=_env(4), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]
  outs = [p.communicate(timeout=600)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  return outs


def _restore_params(config, workdir):
  setup = stage2.build(config, 1)
  state, step = checkpointing.restore_state_only(os.path.join(workdir, "checkpoints"),
                                                 setup.restore_target())
  return jax.device_get(state.params), step


def test_two_processes_match_one_process(tmp_path):
  config = tiny_config(extra=",steps=4")
  single = stage2.train_and_evaluate(config, str(tmp_path / "one"))
  # Two processes, interrupted at step 2 and resumed: Orbax saves and restores across both.
  _run_two_processes(str(tmp_path / "two"), "--stop_at=2", arg=":steps=4")
  _run_two_processes(str(tmp_path / "two"), arg=":steps=4")
  params, step = _restore_params(config, str(tmp_path / "two"))
  assert step == 4
  want = jax.device_get(single["state"].params)
  assert_params_close(want, params, rtol=1e-4, atol=1e-5, key_bias_atol=1e-3)
  one = {r["step"]: r["training_loss"] for r in writers.read_jsonl(str(tmp_path / "one"))
         if "training_loss" in r}
  two = {r["step"]: r["training_loss"] for r in writers.read_jsonl(str(tmp_path / "two"))
         if "training_loss" in r}
  assert one.keys() == two.keys() and one
  for k in one:
    assert one[k] == pytest.approx(two[k], rel=1e-4), k


def test_sigterm_checkpoints_and_resume_is_exact(tmp_path):
  config = tiny_config(extra=",steps=40")
  workdir = str(tmp_path / "pre")
  proc = subprocess.Popen(_train_cmd(workdir, arg=":steps=40"), env=_env(8),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 300
  log = os.path.join(workdir, "metrics.jsonl")
  while time.time() < deadline:  # Wait for training to be under way (step 4 logged).
    rows = writers.read_jsonl(workdir) if os.path.exists(log) else []
    if any(r.get("step", 0) >= 4 for r in rows):
      break
    time.sleep(0.2)
  proc.send_signal(signal.SIGTERM)
  out = proc.communicate(timeout=300)[0]
  assert proc.returncode == 0, out[-3000:]
  stopped = checkpointing.Checkpointer(workdir, best_metric=None).latest_step()
  assert 4 <= stopped < 40, out[-2000:]
  resumed = stage2.train_and_evaluate(config, workdir)
  full = stage2.train_and_evaluate(config, str(tmp_path / "full"))
  for a, b in zip(jax.tree.leaves(jax.device_get(full["state"].params)),
                  jax.tree.leaves(jax.device_get(resumed["state"].params))):
    np.testing.assert_array_equal(a, b)


def test_kill_9_leaves_last_complete_checkpoint(tmp_path):
  workdir = str(tmp_path / "k")
  proc = subprocess.Popen(
      _train_cmd(workdir, "--config.checkpoint_every=1", arg=":steps=200"), env=_env(8),
      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  ckdir = os.path.join(workdir, "checkpoints")
  deadline = time.time() + 300
  while time.time() < deadline:
    steps = [d for d in os.listdir(ckdir) if d.isdigit()] if os.path.isdir(ckdir) else []
    if len(steps) >= 2:
      break
    time.sleep(0.05)
  proc.kill()  # SIGKILL, most likely in the middle of an async save.
  proc.wait()
  config = tiny_config(extra=",steps=200")
  params, step = _restore_params(config, workdir)
  assert step >= 1 and all(np.isfinite(x).all() for x in jax.tree.leaves(params))


@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_planted_nan(tmp_path, monkeypatch, policy):
  import jax.numpy as jnp
  original = stage2.router_losses

  def nan_losses(aux):
    out = original(aux)
    out["importance"] = out["importance"] + jnp.nan
    return out

  monkeypatch.setattr(stage2, "router_losses", nan_losses)
  config = tiny_config(extra=",steps=4")
  config.nan_policy = policy
  if policy == "stop":
    with pytest.raises(FloatingPointError, match=r"step 2.*loss/importance"):
      stage2.train_and_evaluate(config, str(tmp_path))
  else:
    result = stage2.train_and_evaluate(config, str(tmp_path))
    setup = stage2.build(config, 1)
    import flax.linen as nn
    init = jax.jit(lambda r: nn.unbox(setup.init_fn(r)))(setup.init_rng)
    for a, b in zip(jax.tree.leaves(jax.device_get(init.params)),
                    jax.tree.leaves(jax.device_get(result["state"].params))):
      np.testing.assert_array_equal(a, b)  # Every update was skipped.
    rows = [r for r in writers.read_jsonl(str(tmp_path)) if "nonfinite" in r]
    assert rows and all(r["nonfinite"] == 1.0 for r in rows)


def test_unknown_config_key_fails_before_compiling(tmp_path):
  out = subprocess.run(_train_cmd(str(tmp_path), "--config.optim.lrr=1"), env=_env(8),
                       capture_output=True, text=True, timeout=120)
  assert out.returncode != 0 and "lrr" in out.stderr + out.stdout
