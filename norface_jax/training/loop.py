"""The one training loop: every stage (stage 1, stage 2, MAE, perception) runs through it.

A stage builds a `Stage` (its state layout, its pure `train_step`, its data and its eval
hook); `run` does the rest, the same way for all of them:

1. restore the latest checkpoint (state and Grain iterator) or initialise the state in
   its shards, then graft `init_from` weights (`Stage.after_init`);
2. compile the step once, with the state donated;
3. loop: step; every `log_every` steps one host sync for the metrics, the NaN policy and
   the progress line; every `eval_every` steps the eval hook (scalars, images, the best
   checkpoint); every `checkpoint_every` steps, at the end, at `stop_at` and on SIGTERM a
   checkpoint. A preempted or stopped run returns normally (exit 0); the same command
   resumes from its checkpoint with bit-identical parameters, since every step's
   randomness is `fold_in(rng, step)` and the data position is checkpointed.

Config keys read here: `log_every`, `eval_every` (< 0: never evaluate), `checkpoint_every`,
`keep_checkpoints`,
`nan_policy` ("stop": raise at the next log step; "skip": a non-finite update leaves the
state as it was) and `preemption_check_every`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from norface_jax.evaluation.metrics import summary
from norface_jax.models import activation_sharding
from norface_jax.training import checkpointing, multihost, sharding, writers

NAN_POLICIES = ("stop", "skip")


def nan_policy(config) -> str:
  """`config.nan_policy`, validated (default "stop")."""
  policy = config.get("nan_policy", "stop")
  if policy not in NAN_POLICIES:
    raise ValueError(f"config.nan_policy={policy!r}; expected one of {NAN_POLICIES}")
  return policy


def total_steps(config, num_train_examples: int) -> int:
  """`config.total_steps` if set, else `num_epochs` over the training set."""
  if config.get("total_steps", 0) > 0:
    return int(config.total_steps)
  return max(1, int(config.num_epochs * num_train_examples // config.input.batch_size))


def guard_nonfinite(train_step: Callable, skip: bool) -> Callable:
  """Adds the `nonfinite` metric (loss or any `l2_grads*` not finite) to a pure step and,
  with `skip`, keeps the previous state (all but the step counter) for such an update."""

  def step(state, *args):
    new_state, metrics = train_step(state, *args)
    finite = jnp.isfinite(metrics["training_loss"])
    for key, value in metrics.items():
      if key.startswith("l2_grads"):
        finite &= jnp.isfinite(value)
    if skip:
      kept = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new_state, state)
      new_state = kept.replace(step=new_state.step)
    return new_state, {**metrics, "nonfinite": 1.0 - finite.astype(jnp.float32)}

  return step


@dataclasses.dataclass
class Stage:
  """What a stage hands the loop.

  `train_step(state, batch, rng, *step_args) -> (state, metrics)` is pure; the loop jits
  it with the state donated. `metrics` has `training_loss`. `evaluate(state, step,
  writer)` returns scalars (logged under `eval/`) and writes its images to `writer`. `after_init(state)`
  runs once on a fresh state (not on a restored one): `init_from` grafts go there.
  """
  name: str
  mesh: Any
  init_fn: Callable[[jax.Array], Any]
  init_rng: jax.Array
  step_rng: jax.Array
  abstract_state: Any
  state_shardings: Any
  train_step: Callable
  loader: Iterable
  steps: int
  batch_size: int
  step_args: tuple = ()
  schedule: Callable[[int], Any] | None = None
  evaluate: Callable[[Any, int, Any], dict[str, float]] | None = None
  after_init: Callable[[Any], Any] | None = None
  eval_prefix: str = "eval"  # The evaluation's scalars are logged as `<prefix>/<name>`.
  best_metric: str | None = None
  best_mode: str = "max"

  def restore_target(self):
    return sharding.restore_target(self.abstract_state, self.state_shardings)


def init_state(stage: Stage) -> Any:
  """A fresh state, materialised directly in its shards."""
  init = jax.jit(lambda r: nn.unbox(stage.init_fn(r)), out_shardings=stage.state_shardings)
  state = init(stage.init_rng)
  return stage.after_init(state) if stage.after_init is not None else state


def jit_train_step(config, mesh, state_shardings, train_step: Callable, num_step_args: int):
  """`train_step(state, batch, rng, *step_args)` compiled once for `mesh`: the state in its
  shardings and donated, the batch split over the data axes, the rest replicated, and the
  activations pinned by `config.logical_axis_rules` (`models.activation_sharding`)."""
  repl = sharding.replicated(mesh)
  if config.get("logical_axis_rules"):
    rules = sharding.mesh_rules(config.logical_axis_rules, mesh)
    train_step = activation_sharding.traced_with_rules(train_step, mesh, rules)
  return jax.jit(train_step,
                 in_shardings=(state_shardings, sharding.batch_sharding(mesh), repl,
                               *(repl,) * num_step_args),
                 out_shardings=(state_shardings, repl), donate_argnums=(0,))


def _host_mean(pending: list[dict[str, jax.Array]]) -> tuple[dict[str, float], dict[str, Any]]:
  host = jax.device_get(pending)  # The loop's only host sync, once per log interval.
  return {k: float(np.mean([m[k] for m in host])) for k in host[0]}, host[-1]


def run(config, workdir: str, stage: Stage, *, stop_at: int | None = None,
        on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
  """Trains `stage` into `workdir`; returns {state, report, steps, start, stopped}.

  `stop_at` ends the run after checkpointing that step, as a preemption would.
  `on_step(step)` is called after every step (tests use it to send a signal).
  `report` is the last evaluation's scalars ({} when none ran).
  """
  policy = nan_policy(config)
  mesh, steps = stage.mesh, int(stage.steps)
  log_every = max(1, int(config.get("log_every", 50)))
  eval_every = int(config.get("eval_every", 0)) or steps  # < 0: no evaluation at all.
  checkpoint_every = int(config.get("checkpoint_every", 0)) or steps
  data_iter = iter(stage.loader)
  ckpt = checkpointing.Checkpointer(workdir, keep=int(config.get("keep_checkpoints", 2)),
                                    best_metric=stage.best_metric, best_mode=stage.best_mode)
  if ckpt.latest_step() is not None:
    state, start = ckpt.restore(stage.restore_target(), data_iter)
  else:
    state, start = init_state(stage), 0

  train_step = jit_train_step(config, mesh, stage.state_shardings,
                              guard_nonfinite(stage.train_step, policy == "skip"),
                              len(stage.step_args))
  writer = writers.MetricWriter(workdir)
  writer.write_hparams(config.to_dict())
  progress = writers.ProgressReport(num_train_steps=steps, batch_size=stage.batch_size,
                                    writer=writer, every_steps=log_every, name=stage.name,
                                    start_step=start)
  guard = multihost.PreemptionGuard(check_every=config.get("preemption_check_every", 10))
  pending: list[dict[str, jax.Array]] = []
  report: dict[str, float] = {}
  stopped = ""
  if start >= steps:
    logging.info("%s: the checkpoint of step %d completes the run (%d steps).", stage.name,
                 start, steps)
  try:
    for step in range(start + 1, steps + 1):
      batch = sharding.host_to_global(next(data_iter), mesh)
      state, metrics = train_step(state, batch, stage.step_rng, *stage.step_args)
      pending.append(metrics)
      if on_step is not None:
        on_step(step)
      if step % log_every == 0 or step == steps:
        mean, last = _host_mean(pending)
        pending = []
        if stage.schedule is not None:
          mean["learning_rate"] = float(stage.schedule(step - 1))
        if policy == "stop" and not np.isfinite(last["training_loss"]):
          raise FloatingPointError(
              f"{stage.name}: non-finite training loss {last['training_loss']} at step {step} "
              f"(components: { {k: v for k, v in last.items() if k.startswith('loss/')} }); "
              "config.nan_policy='skip' skips such updates instead")
        writer.write_scalars(step, mean)
        progress(step, mean)
      if eval_every > 0 and (step % eval_every == 0 or step == steps):
        if stage.evaluate is not None:
          with progress.paused():
            report = stage.evaluate(state, step, writer)
            writer.write_scalars(step, {f"{stage.eval_prefix}/{k}": v for k, v in report.items()})
            logging.info("%s %s at step %d: %s", stage.name, stage.eval_prefix, step,
                         summary(report))
            if stage.best_metric:
              ckpt.save_best(step, state, report)
      preempted = guard.should_stop(step)
      if preempted or step == stop_at:
        stopped = "preempted" if preempted else "stop_at"
      if step % checkpoint_every == 0 or step == steps or stopped:
        with progress.paused():
          ckpt.save(step, state, data_iter, force=True)
      if stopped:
        logging.warning("%s: stopping at step %d (%s); the same command resumes from its "
                        "checkpoint.", stage.name, step, stopped)
        break
  finally:
    progress.close()
    guard.close()
    ckpt.close()
    writer.close()
  return {"state": state, "report": report, "steps": steps, "start": start,
          "stopped": stopped}
