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


class PreemptionGuard:
  """Turns SIGTERM into "checkpoint at the current step and exit 0".

  The handler only sets a flag; the training loop asks `should_stop()` after each step.
  With several processes the flags are OR-ed across processes every `check_every` steps
  (one tiny all-gather), so every process stops at the same step.
  """

  def __init__(self, check_every: int = 1, signals=(signal.SIGTERM,)):
    self.check_every = max(1, check_every)
    self._flag = threading.Event()
    self._previous = {}
    if threading.current_thread() is threading.main_thread():
      for sig in signals:
        self._previous[sig] = signal.signal(sig, self._handle)

  def _handle(self, signum, frame) -> None:
    del frame
    logging.warning("Received signal %d: will checkpoint and stop after this step.", signum)
    self._flag.set()

  def request(self) -> None:
    """Asks for a stop as the signal would (tests, schedulers with other signals)."""
    self._flag.set()

  def should_stop(self, step: int) -> bool:
    if jax.process_count() == 1:
      return self._flag.is_set()
    if step % self.check_every:
      return False
    from jax.experimental import multihost_utils
    flags = multihost_utils.process_allgather(np.array([self._flag.is_set()], np.int32))
    return bool(np.any(flags))

  def close(self) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}
