"""Dispatch from a config to its trainer (the one place launch scripts call)."""

from __future__ import annotations

import importlib
from typing import Any

import jax
import ml_collections
from absl import logging

# config.stage -> the module whose `train_and_evaluate` trains it (imported on demand).
TRAINERS = {"cla": "stage2", "mae": "mae", "nor": "stage1", "perception": "perception_train"}


def train(config: ml_collections.ConfigDict, workdir: str, *, stop_at: int | None = None,
          on_step=None) -> dict[str, Any]:
  """Runs the trainer that `config.stage` names; every one goes through `loop.run`, so
  `stop_at`, SIGTERM and the NaN policy behave the same for all of them."""
  stage = config.get("stage", "cla")
  if stage not in TRAINERS:
    raise ValueError(f"config.stage={stage!r}: known stages are {sorted(TRAINERS)}")
  logging.log_first_n(logging.INFO, "JAX %s: %d process(es), %d %s device(s).", 1,
                      jax.__version__, jax.process_count(), jax.device_count(),
                      jax.devices()[0].platform)
  module = importlib.import_module(f"norface_jax.training.{TRAINERS[stage]}")
  return module.train_and_evaluate(config, workdir, stop_at=stop_at, on_step=on_step)
