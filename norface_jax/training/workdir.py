"""A run's workdir: `config.json` beside `checkpoints/`, `best/` and the metric logs.

Every trainer writes the config it ran with; evaluation, export, prediction and a
resumed run read it back with `load_config`.
"""

from __future__ import annotations

import json
import os

import jax
import ml_collections


def prepare(config: ml_collections.ConfigDict, workdir: str) -> str:
  """The absolute workdir, created, with `config.json` written (by process 0)."""
  workdir = os.path.abspath(os.path.expanduser(workdir))
  os.makedirs(workdir, exist_ok=True)
  save_config(config, workdir)
  return workdir


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a workdir was trained with."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: is {workdir!r} a training workdir?")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))
