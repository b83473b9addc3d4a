"""What the one loop guarantees, checked on every trainer's real step: a SIGTERM'd run
exits cleanly with a checkpoint and resumes bit-identically (MAE and perception here;
stage 1 and stage 2 in their own files), `nan_policy="skip"` leaves the state untouched
by non-finite updates, and an unknown policy is refused before anything compiles."""

import os
import signal

import jax
import numpy as np
import pytest

from norface_jax.training import entry, loop, writers
from tests.test_mae import tiny_mae_config
from tests.test_stage1_train import tiny_config as tiny_stage1_config
from tests.test_train_stage2 import tiny_config as tiny_stage2_config


def tiny_perception_config():
  from norface_jax import configlib
  from tests.test_perception_train import ROOT
  c = configlib.load_config(os.path.join(ROOT, "configs", "perception_synthfacs.py")
                            + ":steps=4,frames=1,batch=16")
  c.nets.widths = (8, 8, 16, 16)
  c.nets.vgg_cfg = (8, "M", 16, 16)
  c.nets.eval_cfg = (8, "M", 16)
  c.log_every = 1
  c.mesh = (("data", 8),)
  c.evaluate = False
  return c


def tiny_mae():
  c = tiny_mae_config()
  c.total_steps = 4
  c.eval_every = 4
  return c


CONFIGS = {"mae": tiny_mae, "perception": tiny_perception_config,
           "stage1": tiny_stage1_config, "stage2": tiny_stage2_config}


def multihost_configs():
  """Perception, stage 1 and MAE at 2 steps with their evaluation (the multi-host check:
  `tests/multihost_stages.py`), in the order they run."""
  out = {}
  for name in ("perception", "stage1", "mae"):
    c = CONFIGS[name]()
    c.total_steps = 2
    c.eval_every = 2
    c.checkpoint_every = 2
    out[name] = c
  return out


def leaves(state):
  return jax.tree.leaves(jax.device_get(state.replace(step=0)))


@pytest.mark.parametrize("name", ["mae", "perception"])
def test_sigterm_then_resume_is_bit_identical(tmp_path, name):
  config = CONFIGS[name]()
  full = entry.train(config, str(tmp_path / "full"))
  kill = lambda s: os.kill(os.getpid(), signal.SIGTERM) if s == 2 else None  # noqa: E731
  cut = entry.train(config, str(tmp_path / "cut"), on_step=kill)
  assert cut["stopped"] == "preempted" and int(cut["state"].step) == 2
  resumed = entry.train(config, str(tmp_path / "cut"))
  assert resumed["start"] == 2 and int(resumed["state"].step) == config.total_steps
  for a, b in zip(leaves(full["state"]), leaves(resumed["state"])):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_skip_policy_keeps_the_state_through_nonfinite_updates(tmp_path, monkeypatch, name):
  """Every update made non-finite (loss and state): with "skip" the run finishes with the
  initial parameters and optimizer state, and logs each step as non-finite."""
  import jax.numpy as jnp
  config = CONFIGS[name]()
  config.total_steps = 2
  config.eval_every = -1  # The update is what is checked here; no evaluation to compile.
  config.nan_policy = "skip"
  guard, run, stages = loop.guard_nonfinite, loop.run, []

  def poisoned(train_step, skip):
    def step(state, *args):
      new, metrics = train_step(state, *args)
      nan = lambda x: x * jnp.nan if jnp.issubdtype(x.dtype, jnp.floating) else x  # noqa: E731
      return jax.tree.map(nan, new), {**metrics, "training_loss": metrics["training_loss"] * jnp.nan}
    return guard(step, skip)

  monkeypatch.setattr(loop, "guard_nonfinite", poisoned)
  monkeypatch.setattr(loop, "run", lambda c, w, stage, **kw: stages.append(stage) or run(c, w, stage, **kw))
  out = entry.train(config, str(tmp_path))
  init = loop.init_state(stages[0])
  assert int(out["state"].step) == 2
  for a, b in zip(leaves(init), leaves(out["state"])):
    np.testing.assert_array_equal(a, b)
  rows = [r for r in writers.read_jsonl(str(tmp_path)) if "nonfinite" in r]
  assert rows and all(r["nonfinite"] == 1.0 for r in rows)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_unknown_nan_policy_is_refused(tmp_path, name):
  config = CONFIGS[name]()
  config.nan_policy = "ignore"
  with pytest.raises(ValueError, match="config.nan_policy='ignore'"):
    entry.train(config, str(tmp_path))
  assert not os.path.exists(tmp_path / "checkpoints")
