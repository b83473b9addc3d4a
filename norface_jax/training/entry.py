"""Dispatch from a config to its trainer (the one place launch scripts call)."""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
from absl import logging


def train(config: ml_collections.ConfigDict, workdir: str, *, stop_at: int | None = None) -> dict[str, Any]:
  """Runs the trainer that `config.stage` names."""
  logging.info("JAX %s: %d processes, %d devices (%s).", jax.__version__, jax.process_count(),
               jax.device_count(), jax.devices()[0].platform)
  stage = config.get("stage", "cla")
  if stage == "cla":
    from norface_jax.training import stage2
    return stage2.train_and_evaluate(config, workdir, stop_at=stop_at)
  if stage == "mae":
    from norface_jax.training import mae
    return mae.train_and_evaluate(config, workdir, stop_at=stop_at)
  if stage == "nor":
    from norface_jax.training import stage1
    return stage1.train_and_evaluate(config, workdir)
  if stage == "perception":
    from norface_jax.training import perception_train
    return perception_train.train_and_evaluate(config, workdir)
  raise ValueError(f"config.stage={stage!r}: known stages are 'cla', 'mae', 'nor', 'perception'")
