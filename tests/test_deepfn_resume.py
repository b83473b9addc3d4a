"""DeepFN resumes: stop_at, a real SIGTERM and the NaN policy; the resumed result is
bit-identical to an uninterrupted run (autoencoder checkpoints and protocol records)."""

import json
import os
import signal

import jax
import ml_collections
import numpy as np
import pytest

from norface_jax.deepfn import ae_train
from norface_jax.deepfn import protocol
from norface_jax.training import checkpointing

AE_CFG = dict(widths=(4, 4, 8, 8), latent=8, batch_size=2, lr=1e-3, b1=0.5, b2=0.999,
              warp=dict(rotation_deg=10.0, scale=0.05, shift=0.05, grid=5, noise=0.02))


def _config(**overrides):
  """tests/test_deepfn_train.py's tiny protocol with 7 subjects (6 autoencoders), gender
  splits only (2 within, 2 cross) and 2 autoencoder chunks of 2 iterations."""
  from norface_jax.configlib import load_config
  c = load_config("configs/deepfn_bp4d.py:synthetic,tiny")
  c.data.frames_per_subject = 8
  c.data.max_subjects = {"bp4d": 7, "disfa": 3}
  c.preprocess.ae_size = c.preprocess.lenet_size = 32
  c.ae.update(widths=(4, 4, 8, 8), latent=8, batch_size=4, iterations=4, steps_per_call=2)
  c.protocol.update(n_train=1, n_val=1, groups=("gender",))
  c.update(overrides)
  return c


def _ae_checkpoint(workdir):
  return checkpointing.restore_state_only(os.path.join(workdir, "ae", "checkpoints"), None)


def _assert_trees_equal(a, b):
  flat_a, flat_b = jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)
  assert len(flat_a) == len(flat_b)
  for (path, x), y in zip(flat_a, flat_b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """One uninterrupted run: its records and its final autoencoder checkpoint."""
  workdir = str(tmp_path_factory.mktemp("reference"))
  out = protocol.run(_config(), workdir)
  assert out["stopped"] == ""
  state, step = _ae_checkpoint(workdir)
  assert step == 4
  return {"records": json.dumps(out["records"]), "ae": state}


def _assert_same_as_reference(out, workdir, reference):
  assert out["stopped"] == ""
  assert json.dumps(out["records"]) == reference["records"]
  state, step = _ae_checkpoint(workdir)
  assert step == 4
  _assert_trees_equal(reference["ae"], state)
  assert os.path.getsize(os.path.join(workdir, "deepfn_table.md")) > 0


def test_stop_at_then_rerun_is_bit_identical(tmp_path, reference):
  workdir = str(tmp_path)
  out = protocol.run(_config(stop_at=2), workdir)
  assert out["stopped"] == "stop_at" and out["info"]["ae"]["done"] == 2
  assert _ae_checkpoint(workdir)[1] == 2
  assert not os.path.exists(tmp_path / "records.json")
  # The same command (stop_at still 2) resumes at iteration 2 and runs to the end.
  out = protocol.run(_config(stop_at=2), workdir)
  assert out["info"]["ae"]["resumed_at"] == 2
  _assert_same_as_reference(out, workdir, reference)


def test_sigterm_in_training_and_between_splits_then_rerun(tmp_path, reference, monkeypatch):
  workdir = str(tmp_path)
  kill = lambda: os.kill(os.getpid(), signal.SIGTERM)  # noqa: E731
  handler = signal.getsignal(signal.SIGTERM)
  # 1. SIGTERM after the first autoencoder chunk: the handler's flag stops the run there.
  out = protocol.run(_config(), workdir, on_chunk=lambda it: kill() if it == 2 else None)
  assert out["stopped"] == "preempted" and out["info"]["ae"]["done"] == 2
  assert _ae_checkpoint(workdir)[1] == 2
  assert signal.getsignal(signal.SIGTERM) == handler  # The guard put it back.
  # 2. Rerun, SIGTERM during the first LeNet split: stops after that split, recorded.
  real_run_split, calls = protocol.run_split, []

  def run_split(*args, **kwargs):
    calls.append(1)
    if len(calls) == 1:
      kill()
    return real_run_split(*args, **kwargs)

  monkeypatch.setattr(protocol, "run_split", run_split)
  out = protocol.run(_config(), workdir)
  assert out["stopped"] == "preempted" and out["info"]["ae"]["resumed_at"] == 2
  assert len(protocol.read_progress(str(tmp_path / "progress.jsonl"))) == 1
  # 3. Rerun: the autoencoders come from their final checkpoint, the done split from
  # progress.jsonl; only the remaining splits train.
  out = protocol.run(_config(), workdir)
  assert out["info"]["ae"]["resumed_at"] == 4
  assert len(calls) == 1 + 3  # The gender protocol has 2 within + 2 cross splits.
  _assert_same_as_reference(out, workdir, reference)


def test_a_torn_progress_line_is_dropped(tmp_path):
  path = str(tmp_path / "progress.jsonl")
  with open(path, "w") as f:
    f.write(json.dumps({"split": "rep0/gender/within/0", "records": [{"score": 0.5}]}) + "\n")
    f.write('{"split": "rep0/gender/within/1", "rec')
  assert protocol.read_progress(path) == {"rep0/gender/within/0": [{"score": 0.5}]}
  with open(path) as f:
    assert f.read().count("\n") == 1  # Rewritten without the torn line.


def test_a_rerun_with_other_settings_is_refused(tmp_path):
  protocol.check_same_run(str(tmp_path / "run.json"), {"seed": 0, "ae": {"lr": 1e-3}})
  protocol.check_same_run(str(tmp_path / "run.json"), {"seed": 0, "ae": {"lr": 1e-3}})
  with pytest.raises(ValueError, match=r"\['ae'\]"):
    protocol.check_same_run(str(tmp_path / "run.json"), {"seed": 0, "ae": {"lr": 2e-3}})


def _persons(bad: bool):
  """Two persons' 32x32 frames (the second all NaN with `bad`) and the template's."""
  rng = np.random.default_rng(0)
  persons = [rng.uniform(size=(n, 32, 32, 1)).astype(np.float32) for n in (6, 4)]
  if bad:
    persons[1][:] = np.nan
  images_x, n_x = ae_train.stack_person_images(persons)
  return images_x, n_x, rng.uniform(size=(5, 32, 32, 1)).astype(np.float32)


def test_nan_policy(tmp_path):
  with pytest.raises(ValueError, match="config.nan_policy='sometimes'"):
    protocol.run(_config(nan_policy="sometimes"), str(tmp_path / "bad_policy"))
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("data",))
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  trainers = {policy: ae_train.make_trainer(ml_collections.ConfigDict(AE_CFG),
                                            skip_nonfinite=policy == "skip")
              for policy in ("stop", "skip")}
  fresh = lambda: ae_train.init_persons(trainers["stop"], keys[:2], 32, mesh)  # noqa: E731

  def train(policy: str, bad: bool, workdir=None, stop_at=0):
    control = ae_train.Control(workdir=workdir, nan_policy=policy, names=("bp4d:1", "bp4d:2"),
                               stop_at=stop_at)
    return ae_train.train(trainers[policy], fresh(), *_persons(bad), keys[2:], 4, mesh,
                          mode="loop", steps_per_call=2, control=control)

  # "stop": two clean iterations checkpointed, then NaN frames for the second person.
  workdir = str(tmp_path / "ae")
  assert train("stop", False, workdir, stop_at=2)[2]["stopped"] == "stop_at"
  with pytest.raises(FloatingPointError, match="person bp4d:2: .* at iteration 3; the last "
                                               "checkpoint is of iteration 2"):
    train("stop", True, workdir)
  # "skip": the NaN person's updates leave its state as it was (the step still counts);
  # the other person trains as without them. That is two compiled programs (with and
  # without the skip's selects), which XLA may fuse differently: held to float rounding
  # (measured up to 2.4e-7 apart with the tests' compile flags, after Adam), not bit for bit;
  # a skip that leaked into this person would leave it at its initial values.
  skipped, metrics, status = train("skip", True)
  reference, _, _ = train("stop", False)
  assert status["nonfinite"] == 4 and np.isnan(metrics["loss_x"][1]).all()
  np.testing.assert_array_equal(np.asarray(skipped.step), [4, 4])
  person = lambda tree, p: jax.tree.map(lambda a: a[p], tree)  # noqa: E731
  init = fresh()
  _assert_trees_equal(person((init.params, init.opt_x, init.opt_y), 1),
                      person((skipped.params, skipped.opt_x, skipped.opt_y), 1))
  for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(person(reference, 0))[0],
                          jax.tree.leaves(person(skipped, 0))):
    np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-4, atol=1e-6,
                               err_msg=jax.tree_util.keystr(path))
  moved = [np.abs(np.asarray(a) - np.asarray(b)).max() for a, b in
           zip(jax.tree.leaves(person(init.params, 0)), jax.tree.leaves(person(skipped.params, 0)))]
  assert max(moved) > 1e-4, max(moved)  # It trained: far beyond the tolerance above.
