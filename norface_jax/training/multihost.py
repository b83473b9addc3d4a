"""The one place that initialises multi-host JAX, and the preemption guard.

- One process on a laptop: nothing to do.
- Several processes on one machine (tests, CPU collectives): an explicit coordinator,
  process count and id; CPU collectives go through gloo.
- A Cloud TPU pod (or a GPU cluster with a scheduler JAX knows): `auto`, and
  `jax.distributed.initialize()` discovers the coordinator and the process id itself.
"""

from __future__ import annotations

import signal
import threading

import jax
import numpy as np
from absl import logging


def initialize(*, coordinator_address: str = "", num_processes: int = 0, process_id: int = -1,
               auto: bool = False, cpu_collectives: str = "gloo") -> None:
  """Initialises `jax.distributed` when asked to; idempotent in practice (call once)."""
  if coordinator_address or num_processes > 1:
    if not coordinator_address or num_processes < 1 or process_id < 0:
      raise ValueError("multi-process runs need --coordinator_address, --num_processes and "
                       f"--process_id (got {coordinator_address!r}, {num_processes}, {process_id})")
    if cpu_collectives:
      jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
  elif auto:
    jax.distributed.initialize()
  logging.info("Process %d of %d; %d local and %d global devices.", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())


def _preemption_service() -> bool:
  """Whether JAX's preemption sync manager runs in this (multi-process) job."""
  from jax.experimental import multihost_utils
  try:
    multihost_utils.reached_preemption_sync_point(0)
  except RuntimeError:  # jax_enable_preemption_service is off.
    return False
  return True


class PreemptionGuard:
  """Turns SIGTERM into "checkpoint at the current step and exit 0".

  One process: a Python handler sets a flag; the loop asks `should_stop(step)` after each
  step. Several processes: JAX's preemption service (started by
  `jax.distributed.initialize`) catches the signal on whichever process gets it, agrees
  with the others on a step after it, and `should_stop` turns True on every process at
  that same step (`multihost_utils.reached_preemption_sync_point`, a local check at every
  step, no collective). Where that service is off (`jax_enable_preemption_service`),
  the processes OR their flags with a tiny all-gather every `check_every` steps instead.
  """

  def __init__(self, check_every: int = 1, signals=(signal.SIGTERM,)):
    self.check_every = max(1, check_every)
    self._flag = threading.Event()
    self._previous = {}
    self._sync_point = jax.process_count() > 1 and _preemption_service()
    # The preemption service has its own SIGTERM handler: a Python one would replace it.
    if threading.current_thread() is threading.main_thread() and not self._sync_point:
      for sig in signals:
        self._previous[sig] = signal.signal(sig, self._handle)

  def _handle(self, signum, frame) -> None:
    del frame
    logging.warning("Received signal %d: will checkpoint and stop after this step.", signum)
    self._flag.set()

  def request(self) -> None:
    """Asks for a stop as the signal would (tests, schedulers with other signals), in a
    single-process run or without the preemption service."""
    self._flag.set()

  def should_stop(self, step: int) -> bool:
    if jax.process_count() == 1:
      return self._flag.is_set()
    from jax.experimental import multihost_utils
    if self._sync_point:
      if multihost_utils.reached_preemption_sync_point(int(step)):
        logging.warning("Preemption notice: every process stops at step %d.", step)
        return True
      return False
    if step % self.check_every:
      return False
    flags = multihost_utils.process_allgather(np.array([self._flag.is_set()], np.int32))
    return bool(np.any(flags))

  def close(self) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}
