"""The SynthFACS perception trainer runs, saves, and `load` rebuilds what stage 1 uses."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from norface_jax import configlib
from norface_jax.data import labels
from norface_jax.training import perception_nets, perception_train, writers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_perception_train_and_load(tmp_path):
  c = configlib.load_config(os.path.join(ROOT, "configs", "perception_synthfacs.py")
                            + ":steps=2,frames=1,batch=16")
  c.nets.widths = (8, 8, 16, 16)
  c.nets.vgg_cfg = (8, "M", 16, 16)
  c.nets.eval_cfg = (8, "M", 16)
  c.log_every = 1
  c.mesh = (("data", 8),)
  result = perception_train.train_and_evaluate(c, str(tmp_path))
  # The quality of the networks on unseen faces is measured at the end (quality.json).
  q = result["quality"]
  for k in ("expression/icc", "eval_au/icc", "landmarks/rmse_px", "eyebrow/rmse",
            "identity/accuracy_heldout_frames", "eval_id/accuracy_heldout_frames"):
    assert np.isfinite(q[k]), k
  assert 0.0 <= q["identity/accuracy_heldout_frames"] <= 1.0
  assert q["n_test"] == 14  # bp4d fold 0: 14 test subjects x 1 frame
  logs = [row for row in writers.read_jsonl(str(tmp_path)) if "training_loss" in row]
  for k in ("loss/identity", "loss/landmarks", "loss/expression", "loss/eyebrow", "loss/vgg_id",
            "loss/eval_au", "loss/eval_id"):
    assert k in logs[-1] and np.isfinite(logs[-1][k]), k
  nets = perception_nets.load(str(tmp_path))
  x = jnp.zeros((2, 64, 64, 3))
  f = nets.functions()
  assert [a.shape for a in f["vgg"](nets.variables["vgg"], x)] == [(2, 32, 32, 16)] * 2
  assert f["identity"](nets.variables["identity"], x).shape == (2, 64)
  assert f["landmarks"](nets.variables["landmarks"], x).shape == (2, 68, 2)
  assert f["eyebrow"](nets.variables["eyebrow"], x).shape == (2, 4)
  assert len(nets.meta["subjects"]) == 27  # bp4d fold 0 training subjects


def test_synthetic_stage1_trains_its_perception_nets_once(tmp_path, monkeypatch):
  """A `synthetic` stage-1 config without perception_dir trains them under the workdir,
  and reuses them on the next call (a resumed or repeated run) instead of retraining."""
  from norface_jax.training import stage1
  s1 = configlib.load_config(os.path.join(ROOT, "configs", "normalizer.py") + ":synthetic,runlocal")
  assert s1.perception_dir == "" and s1.perception.data.image_size == s1.data.image_size
  calls = []
  monkeypatch.setattr(perception_train, "train_and_evaluate",
                      lambda c, w: calls.append((c.total_steps, w)) or _fake_trained(w, c))
  got = stage1.ensure_perception(s1, str(tmp_path))
  assert got.perception_dir == str(tmp_path / "perception") and s1.perception_dir == ""
  assert calls == [(s1.perception.total_steps, str(tmp_path / "perception"))]
  stage1.ensure_perception(s1, str(tmp_path))
  assert len(calls) == 1  # Already trained: reused.
  explicit = configlib.load_config(os.path.join(ROOT, "configs", "normalizer.py")
                                   + ":synthetic,runlocal,perception_dir=P")
  assert stage1.ensure_perception(explicit, str(tmp_path)).perception_dir == "P"


def _fake_trained(workdir, c):
  os.makedirs(os.path.join(workdir, "checkpoints", str(c.total_steps)))
  open(os.path.join(workdir, "perception.json"), "w").write("{}")


def test_expression_head_on_all_17_aus(tmp_path):
  """exp_targets=all: the expression head regresses every SynthFACS AU (a whole-face
  embedding, as FECNet's), is scored on all 17 and on the dataset's columns, and `load`
  rebuilds the 17-output head."""
  c = configlib.load_config(os.path.join(ROOT, "configs", "perception_synthfacs.py")
                            + ":steps=2,frames=1,batch=16,exp_targets=all")
  c.nets.widths = (8, 8, 16, 16)
  c.nets.vgg_cfg = (8, "M", 16, 16)
  c.nets.eval_cfg = (8, "M", 16)
  q = perception_train.train_and_evaluate(c, str(tmp_path))["quality"]
  assert np.isfinite(q["expression/icc_all_aus"]) and np.isfinite(q["expression/icc"])
  nets = perception_nets.load(str(tmp_path))
  head = nets.variables["expression"]["params"]
  assert any(np.shape(leaf)[-1:] == (17,) for leaf in jax.tree_util.tree_leaves(head))
  assert perception_nets.exp_au_names(c.nets, ["AU6"]) == [f"AU{a}" for a in labels.SYNTH_AUS]
  bad = c.nets.copy_and_resolve_references()
  bad.exp_targets = "some"
  with pytest.raises(ValueError, match="exp_targets='some'"):
    perception_nets.exp_au_names(bad, ["AU6"])
