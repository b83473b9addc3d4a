"""The real stage-1 trainer, tiny, on 8 fake CPU devices (data x model mesh)."""

import os

import jax
import numpy as np

from norface_jax import configlib
from norface_jax.training import stage1, writers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config():
  c = configlib.load_config(os.path.join(ROOT, "configs", "stage1_synthfacs.py")
                            + ":perception_dir=random")
  c.data.image_size = 64
  c.data.frames_per_subject = 2
  c.input.batch_size = 16
  c.input.eval_batch_size = 16
  c.model.decoder_channels = (16, 8, 8)
  c.model.disc_channels = (8, 16)
  c.total_steps = 4
  c.log_every = 2
  c.eval_every = 4
  c.checkpoint_every = 4
  c.eval.max_examples = 16
  c.eval.grid_size = 4
  c.mesh = (("data", 4), ("model", 2))
  return c


def test_stage1_resume_is_exact_and_logs_every_loss(tmp_path):
  config = tiny_config()
  full = stage1.train_and_evaluate(config, str(tmp_path / "full"))
  stage1.train_and_evaluate(config, str(tmp_path / "split"), stop_at=2)
  resumed = stage1.train_and_evaluate(config, str(tmp_path / "split"))
  a = jax.device_get((full["state"].g_params, full["state"].d_params))
  b = jax.device_get((resumed["state"].g_params, resumed["state"].d_params))
  for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))
  logs = writers.read_jsonl(str(tmp_path / "full"))
  keys = set().union(*logs)
  for k in ("training_loss", "loss/adv", "loss/rec", "loss/perc", "loss/id", "loss/lm",
            "loss/exp", "loss/eye", "loss/d_hinge", "images_per_sec",
            "eval/expression/icc_In", "eval/identity/target_rate_In"):
    assert k in keys, k
  assert all(np.isfinite(v) for row in logs for v in row.values())
  assert os.path.exists(tmp_path / "full" / "stage1_grid.png")
  # The ViT encoder is sharded over the model axis like stage 2's.
  specs = [x.sharding.spec for x in jax.tree.leaves(full["state"].g_params)]
  assert any("model" in str(s) for s in specs)
