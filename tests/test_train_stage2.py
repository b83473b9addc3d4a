"""The real stage-2 trainer, tiny, on 8 fake CPU devices with a 2-D (data x model) mesh."""

import os

import jax
import numpy as np
import pytest

from norface_jax import configlib
from norface_jax.training import stage2, writers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(name="affectnet_fer", extra=""):
  return configlib.load_config(os.path.join(ROOT, "tests", "configs", "tiny.py") + f":name={name}" + extra)


def params_of(result):
  return jax.device_get(result["state"].params)


def test_train_resume_is_exact(tmp_path):
  config = tiny_config()
  full = stage2.train_and_evaluate(config, str(tmp_path / "full"))
  # Interrupted at step 3 (checkpointed), then resumed to the end.
  stage2.train_and_evaluate(config, str(tmp_path / "split"), stop_at=3)
  resumed = stage2.train_and_evaluate(config, str(tmp_path / "split"))
  a, b = params_of(full), params_of(resumed)
  for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))
  # It really trained: parameters moved, every loss component was logged.
  logs = writers.read_jsonl(str(tmp_path / "full"))
  keys = set().union(*logs)
  for k in ("training_loss", "loss/cla", "loss/importance", "loss/global_entropy",
            "loss/local_entropy", "l2_grads", "eval/accuracy", "images_per_sec"):
    assert k in keys, k
  assert os.path.isdir(tmp_path / "full" / "checkpoints")
  assert os.path.isdir(tmp_path / "full" / "best")
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "full"))
  assert os.path.exists(tmp_path / "full" / "router_heatmap.png")


def test_state_is_sharded_over_model_axis(tmp_path):
  config = tiny_config()
  config.total_steps = 1
  result = stage2.train_and_evaluate(config, str(tmp_path))
  specs = [x.sharding.spec for x in jax.tree.leaves(result["state"].params)]
  assert any("model" in str(s) for s in specs), specs


@pytest.mark.parametrize("name", ["bp4d_au", "disfa_au_intensity"])
def test_au_tasks_train_and_report(tmp_path, name):
  config = tiny_config(name)
  config.total_steps = 2
  config.eval_every = 2
  result = stage2.train_and_evaluate(config, str(tmp_path))
  report = result["report"]
  key = "f1/mean" if config.task == "au_detection" else "icc/mean"
  assert key in report and np.isfinite(report[key])


def test_bad_mesh_is_reported_before_compiling(tmp_path):
  config = tiny_config()
  config.mesh = (("data", 3), ("model", 2))
  with pytest.raises(ValueError, match="does not fit 8 devices"):
    stage2.train_and_evaluate(config, str(tmp_path))


def test_batch_not_divisible_by_data_axis(tmp_path):
  config = tiny_config()
  config.input.batch_size = 10
  with pytest.raises(ValueError, match="not divisible"):
    stage2.train_and_evaluate(config, str(tmp_path))
