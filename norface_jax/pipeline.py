"""The whole method on SynthFACS, end to end, resumable: `launch/pipeline.py`.

Steps (each keeps its result in `<workdir>/<step>/`, and a finished step writes
`done.json`, so an interrupted pipeline resumes where it stopped; the trainers inside
resume from their own checkpoints):

1. `perception`  the frozen networks of the stage-1 losses, trained from ground truth;
2. `mae`         a short MAE pre-training of the ViT encoder;
3. `stage1`      F_nor (initialised from the MAE encoder), with its seven losses;
4. `target_study` (optional) several candidate target faces, each normalizing the data
                 and training stage 2 briefly; the best AU F1 picks the fixed target;
5. `normalized`  every face of the stage-2 dataset redrawn onto the fixed target;
6. `cla/<run>`   stage 2 with and without identity normalization (AU detection and
                 FER, person-independent split) and the MoE ablation (no M_i, no M_o,
                 m = 0/2/4);
7. `report.md`   tables and figures of what this run measured.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from absl import logging

from norface_jax import configlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(name: str, arg: str) -> ml_collections.ConfigDict:
  return configlib.load_config(os.path.join(ROOT, "configs", f"{name}.py") + (f":{arg}" if arg else ""))


class Pipeline:
  """Runs the steps in order, skipping those whose `done.json` exists."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    self.c = config
    self.workdir = os.path.abspath(os.path.expanduser(workdir))
    os.makedirs(self.workdir, exist_ok=True)
    self.t0 = time.perf_counter()
    # Progress: perception, mae, stage1, [target study], normalized, 4 main stage-2
    # runs, the ablations.
    self.num_steps = 4 + bool(config.target_candidates) + 4 + len(config.ablations)
    self.done_steps = 0

  def path(self, *parts: str) -> str:
    return os.path.join(self.workdir, *parts)

  def step(self, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    done = self.path(name, "done.json")
    if os.path.exists(done):
      self.done_steps += 1
      logging.info("[pipeline] %s (%d/%d): done already, skipping.", name, self.done_steps,
                   self.num_steps)
      with open(done) as f:
        return json.load(f)
    self.done_steps += 1
    logging.info("[pipeline] %s (%d/%d): starting (%.0fs elapsed).", name, self.done_steps,
                 self.num_steps, time.perf_counter() - self.t0)
    t = time.perf_counter()
    result = fn()
    result = {k: v for k, v in result.items() if isinstance(v, (int, float, str, list, dict))}
    result["seconds"] = time.perf_counter() - t
    os.makedirs(self.path(name), exist_ok=True)
    with open(done, "w") as f:
      json.dump(result, f, indent=1)
    logging.info("[pipeline] %s: done in %.0fs.", name, result["seconds"])
    return result

  # --- the steps -----------------------------------------------------------------------

  def perception(self) -> dict[str, Any]:
    from norface_jax.training import entry
    c = _config("perception_synthfacs", f"steps={self.c.perception_steps},size={self.c.image_size},"
                                        f"frames={self.c.perception_frames},"
                                        f"batch={self.c.perception_batch}")
    c.eval_examples = self.c.eval_examples
    c.nets.update(self.c.get("perception_nets", {}))
    entry.train(c, self.path("perception"))
    return {}

  def mae(self) -> dict[str, Any]:
    from norface_jax.training import entry
    c = _config("mae_pretrain", f"runlocal,size={self.c.image_size},"
                                f"steps={self.c.mae_steps},batch={self.c.batch}")
    c.model.encoder = self.c.encoder
    entry.train(c, self.path("mae"))
    return {}

  def stage1(self) -> dict[str, Any]:
    from norface_jax.training import entry, stage1_report
    c = _config("stage1_synthfacs", f"perception_dir={self.path('perception')},"
                                    f"steps={self.c.stage1_steps},target={self.c.target}")
    c.model.encoder = self.c.encoder
    c.data.image_size = self.c.image_size
    c.init_from = self.path("mae", "checkpoints")
    c.eval_every = self.c.stage1_steps
    c.checkpoint_every = self.c.stage1_steps
    entry.train(c, self.path("stage1"))
    result = stage1_report.report(self.path("stage1"), max_examples=self.c.eval_examples,
                                  grid_path=self.path("figures", "normalized_faces.png"))
    # Numbers as floats; the report's "split" (a string) is kept as it is.
    return {k: v if isinstance(v, str) else float(v) for k, v in result.items()}

  def normalize(self, target: str, out: str) -> dict[str, Any]:
    from norface_jax.training import normalize
    data = self.cla_config("au_detection", "idn").data
    data.normalization = "none"
    stats = normalize.normalize_dataset(self.path("stage1"), target, out, data_config=data,
                                        batch_size=self.c.batch)
    return {split: s["images_per_sec"] for split, s in stats.items()}

  def cla_config(self, task: str, run: str, normalized_dir: str = "") -> ml_collections.ConfigDict:
    from norface_jax.training import stage2_config
    c = stage2_config.task_config("synthetic,runlocal", task=task, dataset=self.c.preset)
    c.data.image_size = self.c.image_size
    c.data.identity_bias = self.c.identity_bias
    # Both tasks read the same subjects and frames (BP4D-like tasks elicit emotions).
    c.data.num_identities = 0
    c.data.frames_per_subject = 24
    c.model.encoder = self.c.encoder
    c.total_steps = self.c.cla_steps
    c.eval_every = self.c.cla_steps
    c.checkpoint_every = self.c.cla_steps
    c.log_every = max(1, min(c.log_every, self.c.cla_steps))
    c.eval.max_examples = self.c.eval_examples
    c.init_from = self.path("mae", "checkpoints")
    c.data.normalization = "precomputed"
    c.data.normalized_dir = normalized_dir or self.path("normalized")
    if run == "orig":        # The paper's "w/o Idn": the original stream alone.
      c.model.streams = ("orig",)
      c.data.normalization = "none"
    elif run == "no_mi":
      c.model.use_input_moe = False
    elif run == "no_mo":
      c.model.use_output_moe = False
    elif run.startswith("m"):
      c.model.num_experts = int(run[1:])
      c.model.top_k = min(c.model.top_k, max(c.model.num_experts, 1))
    elif run != "idn":
      raise ValueError(f"unknown stage-2 run {run!r}")
    return c

  def cla(self, task: str, run: str, normalized_dir: str = "", workdir: str = "") -> dict[str, Any]:
    from norface_jax.training import stage2
    c = self.cla_config(task, run, normalized_dir)
    result = stage2.train_and_evaluate(c, workdir or self.path("cla", f"{task}_{run}"))
    report = stage2.scalar_metrics(result["report"])
    return report

  def target_study(self) -> dict[str, Any]:
    scores = {}
    for target in self.c.target_candidates:
      tag = target.replace(":", "_").replace("/", "_")
      out = self.path("target_study", tag, "normalized")
      self.normalize(target, out)
      report = self.cla("au_detection", "idn", normalized_dir=out,
                        workdir=self.path("target_study", tag, "cla"))
      scores[target] = report["f1/mean"]
    best = max(scores, key=scores.get)
    return {"scores": scores, "best": best}

  # --- orchestration -------------------------------------------------------------------

  def run(self) -> dict[str, Any]:
    self.step("perception", self.perception)
    self.step("mae", self.mae)
    stage1 = self.step("stage1", self.stage1)
    target = self.c.target
    study = None
    if self.c.target_candidates:
      study = self.step("target_study", self.target_study)
      target = study["best"]
    norm = self.step("normalized", lambda: self.normalize(target, self.path("normalized")))
    results = {}
    for task in ("au_detection", "fer"):
      for run in ("orig", "idn"):
        results[f"{task}_{run}"] = self.step(f"cla/{task}_{run}", lambda t=task, r=run: self.cla(t, r))
    for run in self.c.ablations:
      results[f"au_detection_{run}"] = self.step(f"cla/au_detection_{run}",
                                                 lambda r=run: self.cla("au_detection", r))
    from norface_jax import pipeline_report
    path = pipeline_report.write(self, stage1=stage1, norm=norm, results=results, study=study,
                                 target=target)
    logging.info("[pipeline] report: %s (%.0fs in all).", path, time.perf_counter() - self.t0)
    return {"report": path, "results": results}
