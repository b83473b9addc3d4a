"""The SynthFACS perception trainer runs, saves, and `load` rebuilds what stage 1 uses."""

import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from norface_jax import configlib
from norface_jax.data import labels
from norface_jax.training import perception_nets, perception_train, writers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_perception_config():
  """The perception trainer at test size, with the expression head on all 17 AUs
  (shared by the guarantees and multi-host tests, so each program compiles once)."""
  c = configlib.load_config(os.path.join(ROOT, "configs", "perception_synthfacs.py")
                            + ":steps=4,frames=1,batch=16,exp_targets=all")
  c.nets.widths = (8, 8, 16, 16)
  c.nets.vgg_cfg = (8, "M", 16, 16)
  c.nets.eval_cfg = (8, "M", 16)
  c.log_every = 1
  c.mesh = (("data", 8),)
  return c


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """The tiny perception run, shared by the tests below (its directory and result)."""
  path = tmp_path_factory.mktemp("perception") / "full"
  return path, perception_train.train_and_evaluate(tiny_perception_config(), str(path))


def test_perception_train_sigterm_resume_and_load(tmp_path, trained):
  c = tiny_perception_config()
  full, result = trained
  # A real SIGTERM after step 2: checkpointed, no quality.json yet; the rerun resumes
  # and ends bit-identical to the uninterrupted run.
  kill = lambda s: os.kill(os.getpid(), signal.SIGTERM) if s == 2 else None  # noqa: E731
  c.evaluate = False
  cut = perception_train.train_and_evaluate(c, str(tmp_path / "cut"), on_step=kill)
  assert cut["stopped"] == "preempted" and int(cut["state"].step) == 2
  assert cut["quality"] == {} and not os.path.exists(tmp_path / "cut" / "quality.json")
  resumed = perception_train.train_and_evaluate(c, str(tmp_path / "cut"))
  assert resumed["start"] == 2
  for a, b in zip(jax.tree.leaves(jax.device_get(result["state"])),
                  jax.tree.leaves(jax.device_get(resumed["state"]))):
    np.testing.assert_array_equal(a, b)
  # The quality of the networks on unseen faces is measured at the end (quality.json).
  q = result["quality"]
  for k in ("expression/icc", "expression/icc_all_aus", "eval_au/icc", "landmarks/rmse_px",
            "eyebrow/rmse", "identity/accuracy_heldout_frames", "eval_id/accuracy_heldout_frames"):
    assert np.isfinite(q[k]), k
  assert 0.0 <= q["identity/accuracy_heldout_frames"] <= 1.0
  assert q["n_test"] == 14  # bp4d fold 0: 14 test subjects x 1 frame
  logs = [row for row in writers.read_jsonl(str(full)) if "training_loss" in row]
  for k in ("loss/identity", "loss/landmarks", "loss/expression", "loss/eyebrow", "loss/vgg_id",
            "loss/eval_au", "loss/eval_id"):
    assert k in logs[-1] and np.isfinite(logs[-1][k]), k
  nets = perception_nets.load(str(full))
  x = jnp.zeros((2, 64, 64, 3))
  f = nets.functions()
  assert [a.shape for a in f["vgg"](nets.variables["vgg"], x)] == [(2, 32, 32, 16)] * 2
  assert f["identity"](nets.variables["identity"], x).shape == (2, 64)
  assert f["landmarks"](nets.variables["landmarks"], x).shape == (2, 68, 2)
  assert f["eyebrow"](nets.variables["eyebrow"], x).shape == (2, 4)
  assert len(nets.meta["subjects"]) == 27  # bp4d fold 0 training subjects
  # exp_targets=all: the expression head regresses every SynthFACS AU (a whole-face
  # embedding, as FECNet's), and `load` rebuilds the 17-output head.
  head = nets.variables["expression"]["params"]
  assert any(np.shape(leaf)[-1:] == (17,) for leaf in jax.tree_util.tree_leaves(head))


def test_expression_targets_by_name():
  c = tiny_perception_config()
  assert perception_nets.exp_au_names(c.nets, ["AU6"]) == [f"AU{a}" for a in labels.SYNTH_AUS]
  c.nets.exp_targets = "dataset"
  assert perception_nets.exp_au_names(c.nets, ["AU6"]) == ["AU6"]
  c.nets.exp_targets = "some"
  with pytest.raises(ValueError, match="exp_targets='some'"):
    perception_nets.exp_au_names(c.nets, ["AU6"])


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




def test_stage2_features_stream_reads_the_frozen_networks(trained):
  """Table 9's "w/ E_exp&E_eye": stage 2 with the original stream and, in place of I_n,
  the frozen expression and eyebrow networks' outputs on I_o (projected to the ViT
  width before the Input MoE). The features are exactly those networks'; the train step
  traces with them, and the evaluation step runs on them."""
  from tests.test_train_stage2 import tiny_config
  from norface_jax.training import stage2
  full, _ = trained
  c = tiny_config("bp4d_au", extra=",select=last")
  c.model.streams = ("orig", "features")
  c.data.normalization = "none"
  c.data.perception_dir = str(full)
  c.total_steps = 2
  c.eval_every = 2
  nets = perception_nets.load(str(full))
  f = nets.functions()
  x = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), np.uint8)
  want = np.concatenate([f["expression"](nets.variables["expression"], x / 255.0),
                         f["eyebrow"](nets.variables["eyebrow"], x / 255.0)], -1)
  prepare, frozen = stage2.load_frozen(c)
  got = prepare(frozen, {"image": jnp.asarray(x)})["features"]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  assert stage2.feature_dim(c) == want.shape[-1] == 32 + 4  # embedding + 4 brow channels
  setup = stage2.build(c, num_train_examples=16)
  params = setup.abstract_state.params
  assert params["feature_proj"]["kernel"].shape == (36, 32)  # F -> the mu/8 width
  assert {"input_moe_orig", "input_moe_features"} <= set(params)
  batch = {"image": jnp.asarray(np.repeat(x, 8, 0)), "au": jnp.zeros((16, 12), jnp.float32)}
  step = stage2.make_train_step(setup.model, setup.task, c, setup.tx, prepare)
  _, metrics = jax.eval_shape(step, setup.abstract_state, batch, jax.random.key(0), frozen)
  assert metrics["training_loss"].shape == ()
  state = jax.jit(setup.init_fn)(setup.init_rng)
  out = jax.jit(stage2.make_eval_step(setup.model, setup.task, c, prepare))(
      state.params, batch, frozen)
  assert out["preds"].shape == (16, 12) and np.isfinite(np.asarray(out["preds"])).all()
