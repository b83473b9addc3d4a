"""Stage 2's evaluator: a compiled eval step over a split, the task's metrics, Fig. 8.

It takes functions, not workdirs (as big_vision's evaluators do): `eval_fn(params, batch,
frozen) -> {preds, labels, valid[, topk_idx]}` with global outputs, and `put(batch)`,
which turns a per-process NumPy batch into the step's global arrays. The trainer calls it
every `eval_every` steps; `launch/evaluate.py` calls it on a restored workdir.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

import jax
import numpy as np
from absl import logging

from norface_jax.data import loader as data_loader
from norface_jax.data import registry
from norface_jax.evaluation import metrics as metrics_lib
from norface_jax.evaluation import plots


def evaluate(eval_fn: Callable, params: Any, source: Any, task: Any, config: Any,
             put: Callable[[dict[str, np.ndarray]], Any], keys: tuple[str, ...],
             frozen: Any = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  """Runs the split; returns (the task's report, raw arrays: preds, labels[, topk_idx]).

  `task` is the evaluation task (`registry.eval_task`): across datasets it covers the
  labels both share, and the matching prediction columns are taken.
  """
  _, columns = registry.eval_columns(config.data, config.task)
  preds, labels, topk = [], [], []
  for batch in data_loader.eval_batches(source, batch_size=config.input.eval_batch_size, keys=keys,
                                     max_examples=config.eval.get("max_examples", 0)):
    out = jax.device_get(eval_fn(params, put(batch), frozen))
    valid = out["valid"].astype(bool)
    preds.append(out["preds"][valid])
    labels.append(out["labels"][valid])
    if "topk_idx" in out:
      topk.append(out["topk_idx"][valid])
  preds_np, labels_np = np.concatenate(preds), np.concatenate(labels)
  if columns is not None:
    preds_np = preds_np[:, columns]
  report = task.report(preds_np, labels_np)
  arrays = {"preds": preds_np, "labels": labels_np}
  if topk:
    arrays["topk_idx"] = np.concatenate(topk)
  return report, arrays


def scalar_metrics(report: dict[str, Any]) -> dict[str, float]:
  """The report's scalars (per-AU arrays and strings left out)."""
  return {k: float(v) for k, v in report.items() if np.ndim(v) == 0 and not isinstance(v, str)}


def router_figure(arrays: dict[str, np.ndarray], task: Any, num_experts: int, workdir: str,
                  step: int, writer: Any) -> None:
  """The paper's Fig. 8: experts x labels heatmap of the output MoE's top-k routing."""
  if "topk_idx" not in arrays or num_experts <= 0:
    return
  matrix = plots.router_label_matrix(arrays["topk_idx"], task.positive_labels(arrays["labels"]),
                                     num_experts)
  fig = plots.router_heatmap(matrix, [f"E{e + 1}" for e in range(num_experts)],
                             list(task.label_names), title=f"Output MoE top-k routing, step {step}")
  if jax.process_index() == 0:
    plots.save_figure(fig, os.path.join(workdir, "router_heatmap.png"))
  if writer is not None:
    writer.write_images(step, {"router_heatmap": plots.figure_to_array(fig)})


def write_report(report: dict[str, Any], arrays: dict[str, np.ndarray], task, workdir: str,
                 suffix: str, step: int, *, selection: dict[str, Any] | None = None,
                 extra: dict[str, Any] | None = None) -> None:
  """`eval<suffix>.json` (the report, its checkpoint's `step`, the `selection` that picked
  that checkpoint, and `extra` entries) and its figure (confusion matrix / per-AU bars)."""
  if jax.process_index() != 0:
    return
  serial = {k: (np.asarray(v).tolist() if np.ndim(v) else float(v) if not isinstance(v, str) else v)
            for k, v in report.items()}
  serial["step"] = int(step)
  if selection is not None:
    serial["selection"] = selection
  serial.update(extra or {})
  with open(os.path.join(workdir, f"eval{suffix}.json"), "w") as f:
    json.dump(serial, f, indent=2)
  if task.name == "fer" and "confusion_matrix" in report:
    fig = plots.confusion_matrix_plot(np.asarray(report["confusion_matrix"]), list(task.label_names))
    plots.save_figure(fig, os.path.join(workdir, f"confusion{suffix}.png"))
  elif task.name != "fer":
    key = "f1" if task.name == "au_detection" else "icc"
    values = np.array([report[f"{key}/{n}"] for n in task.label_names])
    fig = plots.per_au_bars({key.upper(): values}, list(task.label_names), ylabel=key.upper())
    plots.save_figure(fig, os.path.join(workdir, f"per_au{suffix}.png"))
  how = ""
  if selection:
    how = (f" (best {selection['metric']} on the {selection['split']} split)"
           if selection.get("split") else " (the last step; nothing selected)")
  logging.info("Test split of %s at step %d%s: %s", workdir, step, how,
               metrics_lib.summary(scalar_metrics(report)))

