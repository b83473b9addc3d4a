"""What the one loop guarantees, checked on every trainer's real step:
`nan_policy="skip"` leaves the state untouched by non-finite updates, and an unknown
policy is refused before anything compiles. (A real SIGTERM, then a bit-identical
resume, is checked in each trainer's own test file, sharing its straight run.)"""

import os

import jax
import numpy as np
import pytest

from norface_jax.training import entry, loop, writers
from tests.test_mae import tiny_mae_config
from tests.test_perception_train import tiny_perception_config
from tests.test_stage1_train import tiny_config as tiny_stage1_config
from tests.test_train_stage2 import tiny_config as tiny_stage2_config


CONFIGS = {"mae": tiny_mae_config, "perception": tiny_perception_config,
           "stage1": tiny_stage1_config, "stage2": tiny_stage2_config}


def multihost_configs():
  """Stage 2, perception, stage 1 and MAE as their own test files train them (so the programs are
  compiled once), with their evaluation, in the order the multi-host check runs them
  (`tests/multihost_stages.py`)."""
  out = {name: CONFIGS[name]() for name in ("stage2", "perception", "stage1", "mae")}
  out["perception"].evaluate = False  # quality.json is each process's own, not the loop's.
  return out


def leaves(state):
  return jax.tree.leaves(jax.device_get(state.replace(step=0)))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_skip_policy_keeps_the_state_through_nonfinite_updates(tmp_path, monkeypatch, name):
  """Every update made non-finite (loss and state): with "skip" the run finishes with the
  initial parameters and optimizer state, and logs each step as non-finite."""
  import jax.numpy as jnp
  config = CONFIGS[name]()
  config.total_steps = 2
  config.eval_every = -1  # The update is what is checked here; no evaluation to compile.
  if "evaluate" in config:  # Nor the perception networks' quality.json.
    config.evaluate = False
  if name == "stage2":  # Nothing evaluated, so nothing to select on.
    from norface_jax.training import stage2_config
    stage2_config.set_selection(config, "last")
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
