"""The real stage-2 trainer, tiny, on 8 fake CPU devices with a 2-D (data x model) mesh."""

import json
import os
import signal

import flax.linen as nn
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


def sigterm_at(step):
  """An `on_step` hook that sends this process a real SIGTERM after `step`."""
  return lambda s: os.kill(os.getpid(), signal.SIGTERM) if s == step else None


def test_train_sigterm_resume_is_exact_and_sharded(tmp_path):
  config = tiny_config()
  full = stage2.train_and_evaluate(config, str(tmp_path / "full"))
  # SIGTERM after step 3: checkpointed there, then the same call resumes to the end.
  cut = stage2.train_and_evaluate(config, str(tmp_path / "split"), on_step=sigterm_at(3))
  assert cut["stopped"] == "preempted" and int(cut["state"].step) == 3
  resumed = stage2.train_and_evaluate(config, str(tmp_path / "split"))
  assert resumed["start"] == 3
  a, b = params_of(full), params_of(resumed)
  for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))
  # It really trained: the encoder and head moved from their initial values by more than
  # float noise, and every loss component was logged.
  setup = stage2.build(config, 1)
  init = jax.device_get(jax.jit(lambda r: nn.unbox(setup.init_fn(r)))(setup.init_rng).params)
  for part in ("encoder", "head"):
    moved = [np.max(np.abs(np.asarray(x) - np.asarray(y))) for x, y in
             zip(jax.tree.leaves(init[part]), jax.tree.leaves(a[part]))]
    assert max(moved) > 1e-3, (part, max(moved))
  logs = writers.read_jsonl(str(tmp_path / "full"))
  keys = set().union(*logs)
  for k in ("training_loss", "loss/cla", "loss/importance", "loss/global_entropy",
            "loss/local_entropy", "l2_grads", "val/accuracy", "images_per_sec"):
    assert k in keys, k
  assert not any(k.startswith("eval/") for k in keys)  # Selection never sees the test split.
  assert os.path.isdir(tmp_path / "full" / "checkpoints")
  assert os.path.isdir(tmp_path / "full" / "best")
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "full"))
  assert os.path.exists(tmp_path / "full" / "router_heatmap.png")
  check_model_axis_sharding(full["state"].params)


def check_model_axis_sharding(params):
  """The 'mlp' logical axis is split over the mesh's 'model' axis (size 2): the MLP
  kernels carry it in their PartitionSpec and each device holds half of that dimension;
  the embedding-only leaves (norm scales) are replicated."""
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  fc1 = [(jax.tree_util.keystr(p), x) for p, x in flat
         if "mlp" in jax.tree_util.keystr(p) and "kernel" in jax.tree_util.keystr(p)]
  assert fc1, "no MLP kernels found"
  for name, x in fc1:
    spec = tuple(x.sharding.spec) + (None,) * (x.ndim - len(tuple(x.sharding.spec)))
    axes = [i for i, a in enumerate(spec) if a == "model" or (isinstance(a, tuple) and "model" in a)]
    assert len(axes) == 1, (name, spec)
    shard = x.addressable_shards[0].data.shape
    assert shard[axes[0]] * 2 == x.shape[axes[0]], (name, shard, x.shape)
  scales = [x for p, x in flat if jax.tree_util.keystr(p).endswith("['scale']")]
  assert scales and all(x.sharding.is_fully_replicated for x in scales)


@pytest.mark.parametrize("name,select", [("bp4d_au", "val"), ("disfa_au_intensity", "last")])
def test_au_tasks_train_and_report_at_the_selected_step(tmp_path, name, select):
  """select='val': checkpoints are compared on held-out training subjects at steps 2 and
  4, and eval.json reports the test split at the best of them and at the last step;
  select='last' (the paper's protocol) reports the last step and keeps no best."""
  config = tiny_config(name, extra=f",select={select}")
  config.total_steps = 4
  config.eval_every = 2
  result = stage2.train_and_evaluate(config, str(tmp_path))
  report = result["report"]
  key = "f1/mean" if config.task == "au_detection" else "icc/mean"
  assert key in report and np.isfinite(report[key])
  saved = json.loads((tmp_path / "eval.json").read_text())
  assert saved["last"]["step"] == 4 and np.isclose(saved[key], report[key])
  rows = writers.read_jsonl(str(tmp_path))
  if select == "last":
    assert saved["selection"] == {"split": None, "metric": None, "rule": "last", "step": 4}
    assert saved["step"] == 4 and np.isclose(saved["last"][key], report[key])
    assert not os.path.exists(tmp_path / "best") and config.data.val_share == 0
    return
  val = {r["step"]: r[f"val/{key}"] for r in rows if f"val/{key}" in r}
  assert sorted(val) == [2, 4]
  best = saved["selection"]["step"]
  assert val[best] == max(val.values())
  assert saved["selection"] == {"split": "val", "metric": key, "mode": "max", "step": best,
                                "value": pytest.approx(val[best])}
  assert saved["step"] == best
  # `launch/evaluate.py` on the workdir scores the same checkpoint the same way.
  from norface_jax.inference import evaluate
  again = evaluate.evaluate_workdir(str(tmp_path), config=config)
  assert np.isclose(again[key], report[key])
  assert json.loads((tmp_path / "eval.json").read_text())["selection"] == saved["selection"]


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
