"""Dispatch from a config to its trainer (the one place launch scripts call)."""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
from absl import logging


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs the trainer that `config.stage` names."""
  logging.info("JAX %s: %d processes, %d devices (%s).", jax.__version__, jax.process_count(),
               jax.device_count(), jax.devices()[0].platform)
  stage = config.get("stage", "cla")
  if stage == "cla":
    from norface_jax.training import stage2
    return stage2.train_and_evaluate(config, workdir)
  raise ValueError(f"config.stage={stage!r}: known stages are 'cla'")
