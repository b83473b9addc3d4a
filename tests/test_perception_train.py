"""The SynthFACS perception trainer runs, saves, and `load` rebuilds what stage 1 uses."""

import os

import jax.numpy as jnp
import numpy as np

from norface_jax import configlib
from norface_jax.training import perception_train, writers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_perception_train_and_load(tmp_path):
  c = configlib.load_config(os.path.join(ROOT, "configs", "perception_synthfacs.py")
                            + ":steps=2,frames=1,batch=16")
  c.nets.widths = (8, 8, 16, 16)
  c.nets.vgg_cfg = (8, "M", 16, 16)
  c.nets.eval_cfg = (8, "M", 16)
  c.log_every = 1
  c.mesh = (("data", 8),)
  perception_train.train_and_evaluate(c, str(tmp_path))
  logs = [row for row in writers.read_jsonl(str(tmp_path)) if "training_loss" in row]
  for k in ("loss/identity", "loss/landmarks", "loss/expression", "loss/eyebrow", "loss/vgg_id",
            "loss/eval_au", "loss/eval_id"):
    assert k in logs[-1] and np.isfinite(logs[-1][k]), k
  nets = perception_train.load(str(tmp_path))
  x = jnp.zeros((2, 64, 64, 3))
  f = nets.functions()
  assert [a.shape for a in f["vgg"](nets.variables["vgg"], x)] == [(2, 32, 32, 16)] * 2
  assert f["identity"](nets.variables["identity"], x).shape == (2, 64)
  assert f["landmarks"](nets.variables["landmarks"], x).shape == (2, 68, 2)
  assert f["eyebrow"](nets.variables["eyebrow"], x).shape == (2, 4)
  assert len(nets.meta["subjects"]) == 27  # bp4d fold 0 training subjects
