"""The one training loop on a toy stage (a two-parameter least-squares fit, SGD): resume,
SIGTERM, stop_at, the NaN policies, evaluation cadence and the best checkpoint, all
checked against values computed by hand."""

import os
import signal

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from norface_jax.data import loader as data_loader
from norface_jax.training import checkpointing, loop, sharding, writers


@flax.struct.dataclass
class ToyState:
  step: jax.Array
  w: jax.Array


SOURCE = [{"x": np.full((2,), float(i), np.float32)} for i in range(16)]
LR = 0.1


def toy_config(**kw):
  c = ml_collections.ConfigDict(dict(log_every=1, eval_every=3, checkpoint_every=100,
                                     keep_checkpoints=2, nan_policy="stop"))
  c.update(kw)
  return c


def toy_stage(steps=6, poison_step=-1, evaluate=None, best=None):
  """loss = mean_b |w - x_b|^2; a step is w -= LR * grad. At `poison_step` (0-based
  counter) the loss and the update are NaN."""
  mesh = sharding.make_mesh((("data", -1),))

  def init_fn(rng):
    del rng
    return ToyState(jnp.zeros((), jnp.int32), jnp.zeros((2,), jnp.float32))

  def train_step(state, batch, rng):
    del rng
    loss_fn = lambda w: jnp.mean(jnp.sum((w - batch["x"]) ** 2, -1))  # noqa: E731
    loss, g = jax.value_and_grad(loss_fn)(state.w)
    bad = state.step == poison_step
    loss = jnp.where(bad, jnp.nan, loss)
    g = jnp.where(bad, jnp.nan, g)
    return state.replace(step=state.step + 1, w=state.w - LR * g), {
        "training_loss": loss, "l2_grads": jnp.linalg.norm(g)}

  rng = jax.random.key(0)
  abstract, shardings = sharding.logical_state_shardings(init_fn, mesh, [], rng)
  loader = data_loader.train_loader(SOURCE, batch_size=8, seed=0, keys=("x",), worker_count=0)
  return loop.Stage(name="toy", mesh=mesh, init_fn=init_fn, init_rng=rng, step_rng=rng,
                    abstract_state=abstract, state_shardings=shardings,
                    train_step=train_step, loader=loader, steps=steps, batch_size=8,
                    evaluate=evaluate, best_metric=best)


def by_hand(steps, skip_step=-1):
  """The same SGD on the loader's batches, in NumPy."""
  it = iter(data_loader.train_loader(SOURCE, batch_size=8, seed=0, keys=("x",), worker_count=0))
  w = np.zeros(2, np.float32)
  for k in range(steps):
    x = next(it)["x"]
    if k != skip_step:
      w = w - LR * 2 * np.mean(w - x, axis=0)
  return w


def test_run_matches_sgd_by_hand(tmp_path):
  out = loop.run(toy_config(), str(tmp_path), toy_stage())
  np.testing.assert_allclose(np.asarray(out["state"].w), by_hand(6), rtol=1e-6)
  assert out["stopped"] == "" and out["start"] == 0
  rows = writers.read_jsonl(str(tmp_path))
  assert [r["step"] for r in rows if "training_loss" in r] == [1, 2, 3, 4, 5, 6]
  assert all(r["nonfinite"] == 0.0 for r in rows if "nonfinite" in r)


@pytest.mark.parametrize("how", ["sigterm", "stop_at"])
def test_preempted_run_resumes_bit_identical(tmp_path, how):
  full = loop.run(toy_config(), str(tmp_path / "full"), toy_stage())
  kill = lambda step: os.kill(os.getpid(), signal.SIGTERM) if step == 2 else None  # noqa: E731
  first = loop.run(toy_config(), str(tmp_path / "cut"), toy_stage(),
                   on_step=kill if how == "sigterm" else None,
                   stop_at=2 if how == "stop_at" else None)
  assert first["stopped"] == ("preempted" if how == "sigterm" else "stop_at")
  assert checkpointing.Checkpointer(str(tmp_path / "cut")).latest_step() == 2
  # The handler is gone after the run: SIGTERM is the default again.
  assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
  second = loop.run(toy_config(), str(tmp_path / "cut"), toy_stage())
  assert second["start"] == 2 and second["stopped"] == ""
  np.testing.assert_array_equal(np.asarray(second["state"].w), np.asarray(full["state"].w))
  # A finished run resumed again does nothing and keeps its state.
  again = loop.run(toy_config(), str(tmp_path / "cut"), toy_stage())
  assert again["start"] == 6
  np.testing.assert_array_equal(np.asarray(again["state"].w), np.asarray(full["state"].w))


def test_nan_policy_stop_skip_and_unknown(tmp_path):
  with pytest.raises(FloatingPointError, match="toy: non-finite training loss nan at step 3"):
    loop.run(toy_config(), str(tmp_path / "stop"), toy_stage(poison_step=2))
  out = loop.run(toy_config(nan_policy="skip"), str(tmp_path / "skip"), toy_stage(poison_step=2))
  # The poisoned update (third step) is skipped, the step counter still advances.
  np.testing.assert_allclose(np.asarray(out["state"].w), by_hand(6, skip_step=2), rtol=1e-6)
  assert int(out["state"].step) == 6
  rows = {r["step"]: r["nonfinite"] for r in writers.read_jsonl(str(tmp_path / "skip"))
          if "nonfinite" in r}
  assert rows == {1: 0.0, 2: 0.0, 3: 1.0, 4: 0.0, 5: 0.0, 6: 0.0}
  with pytest.raises(ValueError, match="config.nan_policy='ignore'"):
    loop.run(toy_config(nan_policy="ignore"), str(tmp_path / "bad"), toy_stage())


def test_eval_cadence_and_best_checkpoint(tmp_path):
  seen = []

  def evaluate(state, step, writer):
    seen.append(step)
    return {"score": float(-abs(step - 3))}  # Best at step 3.

  out = loop.run(toy_config(), str(tmp_path), toy_stage(evaluate=evaluate, best="score"))
  assert seen == [3, 6] and out["report"] == {"score": -3.0}
  rows = [r for r in writers.read_jsonl(str(tmp_path)) if "eval/score" in r]
  assert [(r["step"], r["eval/score"]) for r in rows] == [(3, 0.0), (6, -3.0)]
  best = checkpointing.restore_state_only(os.path.join(str(tmp_path), "best"),
                                          toy_stage().restore_target())
  assert best[1] == 3
  np.testing.assert_allclose(np.asarray(best[0].w), by_hand(3), rtol=1e-6)


def test_total_steps_from_epochs():
  c = ml_collections.ConfigDict(dict(total_steps=0, num_epochs=2, input=dict(batch_size=4)))
  assert loop.total_steps(c, 10) == 5
  c.total_steps = 7
  assert loop.total_steps(c, 10) == 7


def test_checkpoint_saves_compile_no_slices(tmp_path, monkeypatch):
  """Small replicated arrays are saved whole (checkpointing.MIN_REPLICA_SLICE_BYTES), not
  cut per replica by an eager slice that compiles once per array shape."""
  import logging
  compiled = []

  class Listen(logging.Handler):
    def emit(self, record):
      if record.getMessage().startswith("Finished XLA compilation"):
        compiled.append(record.getMessage())

  handler = Listen()
  logging.getLogger("jax").addHandler(handler)
  try:
    with jax.log_compiles(True):
      ckpt = checkpointing.Checkpointer(str(tmp_path), async_save=False)
      mesh = sharding.make_mesh((("data", -1),))
      state = {f"w{i}": jax.device_put(np.ones((i + 1, 8), np.float32), sharding.replicated(mesh))
               for i in range(5)}
      ckpt.save(1, state, None, force=True)
      ckpt.close()
  finally:
    logging.getLogger("jax").removeHandler(handler)
  assert len(jax.devices()) == 8 and (tmp_path / "checkpoints" / "1").is_dir()
  assert not [m for m in compiled if "jit(slice" in m], compiled
