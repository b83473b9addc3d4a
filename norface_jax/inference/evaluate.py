"""Evaluation of trained stage-2 workdirs: one run, k-fold CV, cross-dataset, predict.

The 3-fold subject-exclusive protocol of BP4D/DISFA: train fold k (tests part k,
trains on the other two) into `<workdir>/fold<k>`, evaluate, report the mean over folds.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np
from absl import logging

from norface_jax.data import registry
from norface_jax.evaluation import classifier_eval, plots
from norface_jax.training import checkpointing, sharding, stage2
from norface_jax.training import workdir as workdir_lib


def restore_params(config: ml_collections.ConfigDict, workdir: str, which: str = "best"):
  """(setup, params, step, which) from `<workdir>/best` (the checkpoint selected on the
  validation subjects) or `checkpoints` (the latest; also when the run kept no best)."""
  setup = stage2.build(config, num_train_examples=1)
  if which == "best" and not os.path.isdir(os.path.join(workdir, "best")):
    which = "latest"
  directory = os.path.join(workdir, "best" if which == "best" else "checkpoints")
  state, step = checkpointing.restore_state_only(directory, setup.restore_target())
  return setup, state.params, step, which


def jit_eval_step(setup: Any, config: ml_collections.ConfigDict):
  """(eval_fn(params, global batch, frozen) -> replicated outputs, frozen): the
  restored model's jitted evaluation step, with what it needs frozen (the stage-1
  generator of `online` I_n, the feature networks) made inside the step."""
  prepare_fn, frozen = stage2.load_frozen(config)
  eval_fn = jax.jit(stage2.make_eval_step(setup.model, setup.task, config, prepare_fn),
                    in_shardings=(setup.state_shardings.params, sharding.batch_sharding(setup.mesh),
                                  sharding.replicated(setup.mesh)),
                    out_shardings=sharding.replicated(setup.mesh))
  return eval_fn, frozen


def evaluate_workdir(workdir: str, *, config: ml_collections.ConfigDict | None = None,
                     which: str = "best", test_dataset: str = "") -> dict[str, Any]:
  """Evaluates a trained workdir on its test split (or another dataset's); writes JSON + PNGs."""
  config = copy.deepcopy(config or workdir_lib.load_config(workdir))
  if test_dataset:
    config.data.test_dataset = test_dataset
    config.data.test_preset = test_dataset
  setup, params, step, which = restore_params(config, workdir, which)
  eval_source = registry.make_source(config.data, "test", task=config.task)
  task = registry.eval_task(setup.task, config.data)
  eval_fn, frozen = jit_eval_step(setup, config)
  config.eval.max_examples = 0  # The whole test set.
  put = lambda batch: sharding.host_to_global(batch, setup.mesh)  # noqa: E731
  report, arrays = classifier_eval.evaluate(eval_fn, params, eval_source, task, config, put,
                                            stage2.batch_keys(config, setup.task), frozen)
  suffix = f"_{test_dataset}" if test_dataset else ""
  classifier_eval.write_report(report, arrays, task, workdir, suffix, step,
                                selection=stage2.selection_record(config, workdir, which, step))
  return report


def cross_validate(config: ml_collections.ConfigDict, workdir: str,
                   folds: Sequence[int] = (0, 1, 2)) -> dict[str, float]:
  """Trains (or resumes) and evaluates every fold; writes `cv.json` with per-fold and mean."""
  per_fold, selections = [], []
  for k in folds:
    c = copy.deepcopy(config)
    c.data.fold = k
    fold_dir = os.path.join(workdir, f"fold{k}")
    result = stage2.train_and_evaluate(c, fold_dir)
    if result["stopped"]:  # Preempted: the same command resumes this fold.
      logging.warning("Cross-validation stopped in fold %d; rerun to resume.", k)
      return {}
    per_fold.append(classifier_eval.scalar_metrics(result["report"]))
    with open(os.path.join(fold_dir, "eval.json")) as f:
      selections.append(json.load(f)["selection"])
  keys = sorted(set.intersection(*(set(r) for r in per_fold)))
  mean = {k: float(np.mean([r[k] for r in per_fold])) for k in keys}
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "cv.json"), "w") as f:
      json.dump({"folds": list(folds), "per_fold": per_fold, "mean": mean,
                 "selection": selections}, f, indent=2)
  logging.info("Cross-validation mean over folds %s: %s", list(folds), mean)
  return mean
