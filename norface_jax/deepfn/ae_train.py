"""Training DeepFN autoencoders: one person, or all persons in one compiled program.

One iteration (paper sec. 3.1, faceswap): a batch of template faces updates (E, D_y),
then a batch of the person's faces updates (E, D_x), each with its own Adam
(lr 5e-5, betas 0.5, 0.999) and an L1 loss between the augmentation target and the
reconstruction of the warped input. Batches are drawn on device from the person's
and the template's pre-processed frames, so a whole run is a `lax.scan`.

The paper trains one autoencoder per person, one after the other. `train_persons`
stacks P persons' parameters and optimizer states on a leading person axis, `vmap`s
the iteration over it and shards that axis over the 'data' mesh axis: every device
trains its own persons, with no communication.

`train` runs the iterations in chunks of `steps_per_call` and, between chunks, saves the
stacked states (and the per-iteration losses) with Orbax, checks the losses on the host
(`nan_policy`), asks the `PreemptionGuard` and honours `stop_at`. A rerun restores the
latest chunk and continues: every draw is `fold_in(rng, state.step)`, so a resumed run is
bit-identical to an uninterrupted one.

Shape letters: P persons, N frames, S image side, B batch.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from norface_jax.deepfn import autoencoder as ae_lib
from norface_jax.deepfn import warp as warp_lib
from norface_jax.training import checkpointing
from norface_jax.training.loop import nan_policy  # noqa: F401  (one validation for every trainer)

@flax.struct.dataclass
class AEState:
  """One person's autoencoder: params {encoder, decoder_x, decoder_y} and two Adams."""
  step: jax.Array
  params: Any
  opt_y: Any  # Adam over {encoder, decoder_y} (template updates).
  opt_x: Any  # Adam over {encoder, decoder_x} (person updates).


@dataclasses.dataclass(frozen=True)
class AETrainer:
  """The model, the optimizer and the batch: everything an iteration needs (static)."""
  model: ae_lib.AutoEncoder
  tx: optax.GradientTransformation
  batch_size: int = 64
  warp: warp_lib.WarpConfig = warp_lib.WarpConfig()
  skip_nonfinite: bool = False  # nan_policy "skip": a non-finite iteration changes nothing.

  def init(self, rng: jax.Array, size: int) -> AEState:
    x = jnp.zeros((1, size, size, 1), jnp.float32)
    params = self.model.init(rng, x, x)["params"]
    return AEState(step=jnp.zeros((), jnp.int32), params=params,
                   opt_y=self.tx.init(_sub(params, "decoder_y")),
                   opt_x=self.tx.init(_sub(params, "decoder_x")))

  def _update(self, params, opt_state, decoder: str, images, n, rng):
    k_idx, k_aug = jax.random.split(rng)
    idx = jax.random.randint(k_idx, (self.batch_size,), 0, n)
    inputs, targets = warp_lib.augment(k_aug, images[idx].astype(jnp.float32), self.warp)
    method = (ae_lib.AutoEncoder.reconstruct_x if decoder == "decoder_x"
              else ae_lib.AutoEncoder.reconstruct_y)

    def loss_fn(sub):
      recon = self.model.apply({"params": {**params, **sub}}, inputs, method=method)
      return ae_lib.l1_loss(recon, targets)

    sub = _sub(params, decoder)
    loss, grads = jax.value_and_grad(loss_fn)(sub)
    updates, opt_state = self.tx.update(grads, opt_state, sub)
    return {**params, **optax.apply_updates(sub, updates)}, opt_state, loss

  def step(self, state: AEState, images_x: jax.Array, n_x: jax.Array, images_y: jax.Array,
           rng: jax.Array) -> tuple[AEState, dict[str, jax.Array]]:
    """One iteration: template batch, then person batch. images_*: (N, S, S, 1) in [0, 1]."""
    k_y, k_x = jax.random.split(jax.random.fold_in(rng, state.step))
    params, opt_y, loss_y = self._update(state.params, state.opt_y, "decoder_y", images_y,
                                         images_y.shape[0], k_y)
    params, opt_x, loss_x = self._update(params, state.opt_x, "decoder_x", images_x, n_x, k_x)
    new = AEState(step=state.step + 1, params=params, opt_y=opt_y, opt_x=opt_x)
    if self.skip_nonfinite:  # Both losses and the new params finite, or the old state.
      finite = jax.tree.reduce(lambda ok, a: ok & jnp.all(jnp.isfinite(a)), params,
                               jnp.isfinite(loss_x) & jnp.isfinite(loss_y))
      new = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, state).replace(
          step=state.step + 1)
    return new, {"loss_x": loss_x, "loss_y": loss_y}

  def run(self, state: AEState, images_x, n_x, images_y, rng, num_steps: int):
    """`num_steps` iterations in one `lax.scan`; metrics are per-iteration arrays."""
    def body(s, _):
      return self.step(s, images_x, n_x, images_y, rng)
    return jax.lax.scan(body, state, None, length=num_steps)

  def normalize(self, params, images: jax.Array, batch: int = 256) -> jax.Array:
    """D_y(E(x)) for (N, S, S, 1) images, in chunks of `batch`."""
    outs = [self.model.apply({"params": params}, images[i:i + batch],
                             method=ae_lib.AutoEncoder.normalize)
            for i in range(0, images.shape[0], batch)]
    return jnp.concatenate(outs)


def _sub(params, decoder: str) -> dict:
  return {"encoder": params["encoder"], decoder: params[decoder]}


def make_trainer(cfg, skip_nonfinite: bool = False) -> AETrainer:
  """An `AETrainer` from `config.ae` (widths, latent, batch_size, lr, b1, b2, warp)."""
  model = ae_lib.AutoEncoder(widths=tuple(cfg.widths), latent=cfg.latent,
                             dtype=jnp.dtype(cfg.get("dtype", "float32")))
  tx = optax.adam(cfg.lr, b1=cfg.b1, b2=cfg.b2)
  w = cfg.warp
  return AETrainer(model, tx, cfg.batch_size,
                   warp_lib.WarpConfig(w.rotation_deg, w.scale, w.shift, w.grid, w.noise),
                   skip_nonfinite)


# ----------------------------------------------------------------------------------------
# All persons at once.

def stack_person_images(images: list[np.ndarray],
                        multiple: int = 1) -> tuple[np.ndarray, np.ndarray]:
  """Per-person (N_p, S, S, 1) arrays -> zero-padded (P', N_max, S, S, 1) and counts (P',).

  P' rounds P up to `multiple` (the device count) by repeating the last person; the
  extra rows are trained and dropped.
  """
  if not images:
    raise ValueError("no persons to train")
  n_max = max(len(x) for x in images)
  pad_p = (-len(images)) % multiple
  images = list(images) + [images[-1]] * pad_p
  out = np.zeros((len(images), n_max) + images[0].shape[1:], images[0].dtype)
  for i, x in enumerate(images):
    out[i, :len(x)] = x
  return out, np.asarray([len(x) for x in images], np.int32)


def person_mesh(mesh: Mesh | None = None) -> Mesh:
  """A 1-D ('data',) mesh over all devices unless one is given."""
  return mesh if mesh is not None else Mesh(np.asarray(jax.devices()), ("data",))


@functools.lru_cache(maxsize=16)
def _compiled_run(trainer: AETrainer, mesh: Mesh, num_steps: int, person_chunk: int):
  """jit(shard_map(per-device persons)): each device trains its own persons.

  On a device, `person_chunk` persons are `vmap`ped at a time (0 = all local persons
  at once; 1 = one after the other inside the program) via `lax.map(batch_size=...)`.
  Vmapping convolutions over per-person kernels makes grouped convolutions, fast on
  accelerators but slow on XLA:CPU, hence the knob.
  """
  person = NamedSharding(mesh, P("data"))
  repl = NamedSharding(mesh, P())

  def local(states, images_x, n_x, images_y, rngs):
    one = lambda a: trainer.run(a[0], a[1], a[2], images_y, a[3], num_steps)  # noqa: E731
    local_p = n_x.shape[0]
    chunk = local_p if person_chunk <= 0 else min(person_chunk, local_p)
    if chunk == local_p:
      return jax.vmap(lambda *a: one(a))(states, images_x, n_x, rngs)
    return jax.lax.map(one, (states, images_x, n_x, rngs), batch_size=chunk)

  run_all = jax.shard_map(local, mesh=mesh,
                          in_specs=(P("data"), P("data"), P("data"), P(), P("data")),
                          out_specs=(P("data"), P("data")), check_vma=False)
  return jax.jit(run_all, in_shardings=(person, person, person, repl, person),
                 out_shardings=(person, person), donate_argnums=(0,))


@functools.lru_cache(maxsize=16)
def _compiled_init(trainer: AETrainer, mesh: Mesh, size: int):
  person = NamedSharding(mesh, P("data"))
  return jax.jit(jax.vmap(lambda k: trainer.init(k, size)), in_shardings=person,
                 out_shardings=person)


def init_persons(trainer: AETrainer, rngs: jax.Array, size: int, mesh: Mesh) -> AEState:
  """Stacked states (leading axis P) initialised directly in their person shards."""
  rngs = jax.device_put(rngs, NamedSharding(mesh, P("data")))
  return _compiled_init(trainer, mesh, size)(rngs)


def _chunk_runner(trainer: AETrainer, mode: str, mesh: Mesh | None, images_x: np.ndarray,
                  n_x: np.ndarray, images_y: np.ndarray, rngs: jax.Array,
                  person_chunk: int = 0) -> Callable[[AEState, int], tuple[AEState, dict]]:
  """`run(states, k) -> (states, host metrics (P, k))`: k iterations of every person.

  program: one compiled program for all persons (`_compiled_run`, states donated);
  loop: the paper's way, one person after the other, each its own jitted scan.
  """
  if mode == "program":
    person = NamedSharding(mesh, P("data"))
    images_x = jax.device_put(np.asarray(images_x), person)
    n_x = jax.device_put(np.asarray(n_x, np.int32), person)
    images_y = jax.device_put(np.asarray(images_y), NamedSharding(mesh, P()))
    rngs = jax.device_put(rngs, person)

    def run_program(states, k):
      states, m = _compiled_run(trainer, mesh, k, person_chunk)(states, images_x, n_x,
                                                                images_y, rngs)
      return states, jax.device_get(m)
    return run_program
  if mode == "loop":
    y = jnp.asarray(images_y)

    def run_loop(states, k):
      states = jax.tree.map(jnp.asarray, states)  # Host states: one transfer, not P.
      fn, outs, metrics = _compiled_single(trainer, k), [], []
      for p in range(len(n_x)):
        s, m = fn(_person(states, p), jnp.asarray(images_x[p]), jnp.int32(n_x[p]), y, rngs[p])
        outs.append(s)
        metrics.append(jax.device_get(m))
      return (_stack(outs), {key: np.stack([m[key] for m in metrics]) for key in metrics[0]})
    return run_loop
  raise ValueError(f"config.ae.mode={mode!r}; expected 'program' or 'loop'")


@functools.lru_cache(maxsize=16)
def _compiled_single(trainer: AETrainer, num_steps: int):
  return jax.jit(lambda s, x, n, y, r: trainer.run(s, x, n, y, r, num_steps))


# One program each for a person's slice of the stacked states and for stacking them back
# (instead of one eager op per leaf shape).
_person = jax.jit(lambda states, p: jax.tree.map(lambda a: a[p], states))
_stack = jax.jit(lambda states: jax.tree.map(lambda *a: jnp.stack(a), *states))


@dataclasses.dataclass
class Control:
  """What `train` does between chunks, besides training.

  workdir: checkpoints go to `<workdir>/checkpoints` (None: no checkpoint, no resume);
  guard: a `multihost.PreemptionGuard`, asked after every chunk; stop_at: stop after the
  chunk that reaches this iteration (0: never), as a preemption would; nan_policy: "stop"
  raises on a non-finite loss, "skip" logs it (the trainer must skip such updates);
  names: the persons' names for messages (rows beyond them are padding, not checked);
  on_chunk(iteration): called after each chunk's checkpoint (tests send signals there).
  """
  workdir: str | None = None
  guard: Any = None
  stop_at: int = 0
  nan_policy: str = "stop"
  names: Sequence[str] = ()
  on_chunk: Callable[[int], None] | None = None


def _nonfinite(metrics: dict[str, np.ndarray], control: Control) -> np.ndarray:
  """(persons, iterations) bool: a non-finite loss (padding rows left out)."""
  rows = len(control.names) or len(metrics["loss_x"])
  return ~(np.isfinite(metrics["loss_x"][:rows]) & np.isfinite(metrics["loss_y"][:rows]))


def _check_losses(metrics: dict[str, np.ndarray], start: int, control: Control) -> None:
  """Raises on the first non-finite loss of a chunk (policy "stop"), else logs them."""
  bad = _nonfinite(metrics, control)
  if not bad.any():
    return
  if control.nan_policy == "stop":
    it = int(np.argmax(bad.any(axis=0)))  # The first bad iteration, then its first person.
    p = int(np.argmax(bad[:, it]))
    name = control.names[p] if control.names else f"#{p}"
    raise FloatingPointError(
        f"DeepFN autoencoder of person {name}: non-finite loss (loss_x="
        f"{metrics['loss_x'][p, it]}, loss_y={metrics['loss_y'][p, it]}) at iteration "
        f"{start + it + 1}" + (f"; the last checkpoint is of iteration {start}"
                               if control.workdir else "")
        + ". config.nan_policy='skip' skips such updates instead")
  logging.warning("DeepFN: %d non-finite autoencoder iterations skipped in iterations %d-%d.",
                  int(bad.sum()), start + 1, start + bad.shape[1])


def train(trainer: AETrainer, states: AEState, images_x: np.ndarray, n_x: np.ndarray,
          images_y: np.ndarray, rngs: jax.Array, num_steps: int, mesh: Mesh | None = None, *,
          mode: str = "program", steps_per_call: int = 0, person_chunk: int = 0,
          control: Control | None = None) -> tuple[AEState, dict[str, np.ndarray], dict]:
  """Trains P stacked autoencoders for `num_steps` iterations, resumably.

  images_x (P, N, S, S, 1), n_x (P,), images_y (N_y, S, S, 1), rngs (P, 2) keys; `states`
  fresh, and consumed (donated, or freed before a restore; they give the checkpoint's
  shapes and shardings). Returns the states, the losses {'loss_x', 'loss_y'}: (P,
  num_steps) (zeros where not trained yet) and a status {'start', 'done', 'stopped'
  ('' | 'preempted' | 'stop_at'), 'nonfinite' (iterations with a non-finite loss)}.
  """
  control = control or Control()
  steps_per_call = steps_per_call or num_steps
  run_chunk = _chunk_runner(trainer, mode, mesh, images_x, n_x, images_y, rngs, person_chunk)
  history = {k: np.zeros((len(n_x), num_steps), np.float32) for k in ("loss_x", "loss_y")}
  ckpt = (checkpointing.Checkpointer(control.workdir, keep=1, async_save=False)
          if control.workdir else None)
  done, stopped = 0, ""
  try:
    if ckpt is not None and ckpt.latest_step() is not None:
      target = {"ae": checkpointing.abstract_like(states), **history}
      # Freed first: one device may hold all persons' states (mode loop), not twice.
      jax.tree.map(lambda a: a.delete() if isinstance(a, jax.Array) else None, states)
      restored, done = ckpt.restore(target)
      if done > num_steps:
        raise ValueError(f"the checkpoint in {control.workdir} is of iteration {done}, past "
                         f"config.ae.iterations={num_steps}")
      states, history = restored["ae"], {k: np.array(restored[k]) for k in history}
      logging.info("DeepFN: autoencoders resumed at iteration %d of %d.", done, num_steps)
    start = done
    while done < num_steps and not stopped:
      k = min(steps_per_call, num_steps - done)
      states, m = run_chunk(states, k)
      for key in history:
        history[key][:, done:done + k] = m[key]
      _check_losses(m, done, control)
      prev, done = done, done + k
      if ckpt is not None:
        ckpt.save(done, {"ae": states, **history}, force=True)
      if control.on_chunk is not None:
        control.on_chunk(done)
      if control.guard is not None and control.guard.should_stop(done):
        stopped = "preempted"
      elif prev < control.stop_at <= done:
        stopped = "stop_at"
    if stopped:
      logging.warning("DeepFN: autoencoders stopped at iteration %d of %d (%s)%s.", done,
                      num_steps, stopped, "; the same command resumes" if ckpt else "")
  finally:
    if ckpt is not None:
      ckpt.close()
  return states, history, {"start": start, "done": done, "stopped": stopped,
                           "nonfinite": int(_nonfinite(history, control).sum())}


def train_persons(trainer: AETrainer, states: AEState, images_x: np.ndarray, n_x: np.ndarray,
                  images_y: np.ndarray, rngs: jax.Array, num_steps: int, mesh: Mesh,
                  steps_per_call: int = 0, person_chunk: int = 0
                  ) -> tuple[AEState, dict[str, np.ndarray]]:
  """All persons in one program, `steps_per_call` iterations a call; metrics (P, num_steps).

  The iteration counter in each state keeps the random draws identical however the steps
  are split into calls. `person_chunk`: persons vmapped together on a device (0 = all).
  """
  states, metrics, _ = train(trainer, states, images_x, n_x, images_y, rngs, num_steps, mesh,
                             steps_per_call=steps_per_call, person_chunk=person_chunk)
  return states, metrics


def normalize_persons(trainer: AETrainer, states: AEState, images_x: np.ndarray,
                      mesh: Mesh, batch: int = 64) -> np.ndarray:
  """D_y(E(x)) of each person's frames with that person's autoencoder: (P, N, S, S, 1)."""
  person = NamedSharding(mesh, P("data"))

  @functools.partial(jax.jit, in_shardings=(person, person), out_shardings=person)
  def norm_all(params, x):
    def one(p, imgs):
      chunks = imgs.reshape((-1, batch) + imgs.shape[1:])
      out = jax.lax.map(lambda c: trainer.model.apply({"params": p}, c,
                                                      method=ae_lib.AutoEncoder.normalize),
                        chunks)
      return out.reshape(imgs.shape[:1] + out.shape[2:])
    return jax.vmap(one)(params, x)

  n = images_x.shape[1]
  pad = (-n) % batch
  x = np.pad(np.asarray(images_x), ((0, 0), (0, pad)) + ((0, 0),) * 3)
  out = norm_all(states.params, jax.device_put(x, person))
  return np.asarray(jax.device_get(out))[:, :n]




def train_one_at_a_time(trainer: AETrainer, states: AEState, images_x: np.ndarray,
                        n_x: np.ndarray, images_y: np.ndarray, rngs: jax.Array,
                        num_steps: int) -> tuple[AEState, dict[str, np.ndarray]]:
  """The paper's way: one person after the other, each with its own jitted scan.

  Same states, draws and results as `train_persons`; stacked in and out for comparison.
  """
  states, metrics, _ = train(trainer, states, images_x, n_x, images_y, rngs, num_steps,
                             mode="loop")
  return states, metrics
