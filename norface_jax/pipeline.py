"""The whole method on SynthFACS, end to end, resumable: `launch/pipeline.py`.

Steps (each keeps its result in `<workdir>/<step>/`, and a finished step writes
`done.json`, so an interrupted pipeline resumes where it stopped; the trainers inside
resume from their own checkpoints):

1. `perception`  the frozen networks of the stage-1 losses, trained from ground truth;
2. `mae`         a short MAE pre-training of the ViT encoder;
3. `stage1`      F_nor (initialised from the MAE encoder), with its seven losses;
4. `target_study` (optional) several candidate target faces, each normalizing the data
                 and training stage 2 briefly; the best AU F1 picks the fixed target;
5. `normalized`  every face of the stage-2 dataset redrawn onto the fixed target by F_nor;
6. `deepfn`      the same faces normalized by DeepFN (one autoencoder per person) onto
                 the same target person;
7. `baselines/*` the floor and the probes, per task and seed: the trivial predictor, a
                 linear classifier on pixels of the originals and of the oracle I_n, a
                 plain CNN on the originals;
8. `cla/*`       stage 2 per task and seed: w/o Idn (the original stream alone), and the
                 original stream with I_n from the learned stage 1, from DeepFN and from
                 SynthFACS's oracle; the MoE ablation (seed 0);
9. `report.md`, `report.json`  tables and figures of what this run measured.

Stage-2 runs and probes are independent jobs; `config.workers` > 1 runs them in that
many worker processes at once (one CPU core each is what they use well).
"""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
import sys
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


# The stage-2 comparisons: run name -> where I_n comes from (None: the original stream alone).
COMPARISONS = {"wo_idn": None, "learned": "precomputed", "deepfn": "precomputed",
               "oracle": "oracle"}
TASKS = ("au_detection", "fer")


def _run_job(config_dict: dict, workdir: str, name: str, method: str, args: tuple) -> dict:
  """A worker process's job: one step of a fresh `Pipeline` (results land in done.json)."""
  logging.set_verbosity(logging.WARNING)
  pipe = Pipeline(ml_collections.ConfigDict(config_dict), workdir)
  return pipe.step(name, lambda: getattr(pipe, method)(*args))


def _pin_worker(cores: Any) -> None:
  """One core per worker process: jobs take the next free core from the shared queue."""
  try:
    core = cores.get_nowait()
    os.sched_setaffinity(0, {core})
  except Exception:  # noqa: BLE001  (no queue entry left, or no affinity on this OS)
    pass


class JobProgress:
  """One progress line for a batch of jobs: count, elapsed time and ETA. On a terminal it
  is redrawn in place; elsewhere (a log file) it is logged at each quarter done."""

  def __init__(self, total: int, name: str):
    self.total, self.name, self.count = total, name, 0
    self.t0 = time.perf_counter()
    self._tty = sys.stderr.isatty()

  def done(self, job: str) -> None:
    before = 4 * self.count // max(self.total, 1)
    self.count += 1
    elapsed = time.perf_counter() - self.t0
    eta = elapsed / self.count * (self.total - self.count)
    filled = 20 * self.count // max(self.total, 1)
    line = (f"{self.name} [{'#' * filled}{'.' * (20 - filled)}] {self.count}/{self.total} | "
            f"{elapsed / 60:.1f} min | ETA {eta / 60:.1f} min | last: {job}")
    if self._tty:
      sys.stderr.write("\r" + line.ljust(110))
      sys.stderr.flush()
    elif 4 * self.count // max(self.total, 1) > before:
      logging.info("%s", line)

  def close(self) -> None:
    if self._tty and self.count:
      sys.stderr.write("\n")
      sys.stderr.flush()


class Pipeline:
  """Runs the steps in order, skipping those whose `done.json` exists."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    self.c = config
    self.workdir = os.path.abspath(os.path.expanduser(workdir))
    os.makedirs(self.workdir, exist_ok=True)
    self.t0 = time.perf_counter()

  def path(self, *parts: str) -> str:
    return os.path.join(self.workdir, *parts)

  def step(self, name: str, fn: Callable[[], dict[str, Any]], *,
           quiet: bool = False) -> dict[str, Any]:
    done = self.path(name, "done.json")
    if os.path.exists(done):
      if not quiet:
        logging.info("[pipeline] %s: done already, skipping.", name)
      with open(done) as f:
        return json.load(f)
    logging.debug("[pipeline] %s: starting (%.0fs elapsed).", name, time.perf_counter() - self.t0)
    t = time.perf_counter()
    result = fn()
    result = {k: v for k, v in result.items() if isinstance(v, (int, float, str, list, dict))}
    result["seconds"] = time.perf_counter() - t
    os.makedirs(self.path(name), exist_ok=True)
    with open(done, "w") as f:
      json.dump(result, f, indent=1)
    if not quiet:
      logging.info("[pipeline] %s: done in %.0fs (%.0fs elapsed).", name, result["seconds"],
                   time.perf_counter() - self.t0)
    return result

  def jobs(self, jobs: list[tuple[str, str, tuple]]) -> dict[str, dict[str, Any]]:
    """Runs (step name, method, args) jobs, in `config.workers` processes when > 1. The
    jobs' own log lines stay below WARNING; one progress line counts them."""
    todo = [j for j in jobs if not os.path.exists(self.path(j[0], "done.json"))]
    workers = min(int(self.c.get("workers", 1)), len(todo))
    if todo:
      logging.info("[pipeline] %d jobs (stage-2 runs and probes) in %d process(es); %d done "
                   "already.", len(todo), max(workers, 1), len(jobs) - len(todo))
    progress = JobProgress(len(todo), "[pipeline] jobs")
    if workers > 1:
      ctx = multiprocessing.get_context("spawn")
      with ctx.Manager() as manager:
        cores = manager.Queue()
        for core in sorted(os.sched_getaffinity(0))[:workers]:
          cores.put(core)
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx,
                                                    initializer=_pin_worker,
                                                    initargs=(cores,)) as pool:
          futures = {pool.submit(_run_job, self.c.to_dict(), self.workdir, *j): j[0]
                     for j in todo}
          for fut in concurrent.futures.as_completed(futures):
            fut.result()  # A failed job stops the pipeline with its error.
            progress.done(futures[fut])
    else:
      verbosity = logging.get_verbosity()
      for name, method, args in todo:
        logging.set_verbosity(logging.WARNING)
        try:
          self.step(name, lambda m=method, a=args: getattr(self, m)(*a), quiet=True)
        finally:
          logging.set_verbosity(verbosity)
        progress.done(name)
    progress.close()
    # Every job's result, read back from its done.json.
    return {name: self.step(name, lambda m=method, a=args: getattr(self, m)(*a), quiet=True)
            for name, method, args in jobs}

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
    from norface_jax.training import entry
    from norface_jax.inference import stage1_report
    c = _config("stage1_synthfacs", f"perception_dir={self.path('perception')},"
                                    f"steps={self.c.stage1_steps},target={self.c.target}")
    c.model.encoder = self.c.encoder
    c.data.image_size = self.c.image_size
    c.init_from = self.path("mae", "checkpoints")
    c.eval_every = -1  # The report below evaluates the trained F_nor (once, not twice).
    c.checkpoint_every = self.c.stage1_steps
    entry.train(c, self.path("stage1"))
    result = stage1_report.report(self.path("stage1"), max_examples=self.c.eval_examples,
                                  grid_path=self.path("figures", "normalized_faces.png"))
    # Numbers as floats; the report's "split" (a string) is kept as it is.
    return {k: v if isinstance(v, str) else float(v) for k, v in result.items()}

  def data_config(self) -> ml_collections.ConfigDict:
    """The stage-2 data of every comparison: both tasks read the same subjects and frames."""
    return self.cla_config("au_detection", "wo_idn", 0).data

  def normalize(self, target: str, out: str) -> dict[str, Any]:
    from norface_jax.inference import normalize
    stats = normalize.normalize_dataset(self.path("stage1"), target, out,
                                        data_config=self.data_config(), batch_size=self.c.batch)
    return {split: s["images_per_sec"] for split, s in stats.items()}

  def target_index(self, target: str) -> int:
    from norface_jax.data.synthfacs import presets
    if not target.startswith("synthfacs:"):
      raise ValueError(f"the pipeline's target must be `synthfacs:<subject>`, not {target!r}")
    name = target.split(":", 1)[1]
    subjects = presets.get(self.c.preset).subjects
    return int(name) if name.isdigit() else subjects.index(name)

  def deepfn(self, target: str) -> dict[str, Any]:
    from norface_jax.deepfn import normalize as deepfn_normalize
    d = _config("deepfn_bp4d", "synthetic,runlocal")
    d.ae.update(self.c.get("deepfn_ae", {}))
    if self.c.get("deepfn_ae_size", 0):
      d.preprocess.ae_size = int(self.c.deepfn_ae_size)
    return deepfn_normalize.normalize_dataset(d, self.data_config(), self.target_index(target),
                                              self.path("deepfn"))

  def cla_config(self, task: str, run: str, seed: int) -> ml_collections.ConfigDict:
    from norface_jax.training import stage2_config
    s = self.c.cla
    c = stage2_config.task_config("synthetic,runlocal", task=task, dataset=self.c.preset)
    c.seed = int(seed)
    c.data.image_size = self.c.image_size
    c.data.identity_bias = self.c.identity_bias
    c.data.num_identities = 0
    c.data.frames_per_subject = s.frames_per_subject
    c.data.test_frames_per_subject = s.test_frames_per_subject
    c.data.target_subject = self.target_index(self.c.target)
    c.model.encoder = self.c.encoder
    c.model.pool = s.pool
    c.input.batch_size = s.batch
    c.optim.lr = s.lr
    c.optim.warmup_steps = s.warmup_steps
    c.total_steps = s.steps
    c.eval_every = s.steps
    c.checkpoint_every = s.steps
    c.log_every = max(1, min(c.log_every, s.steps))
    c.eval.max_examples = 0  # The whole test split: the probes score the same faces.
    # One evaluation, after the last step: nothing is selected, every row (and every
    # probe) trains on all training subjects, as the paper's protocol does.
    stage2_config.set_selection(c, "last")
    if s.init_from_mae:
      c.init_from = self.path("mae", "checkpoints")
    source = COMPARISONS.get(run, "precomputed")
    c.data.normalization = source or "none"
    if run == "wo_idn":      # The paper's "w/o Idn": the original stream alone.
      c.model.streams = ("orig",)
    elif run == "deepfn":
      c.data.normalized_dir = self.path("deepfn")
    elif run in ("learned", "no_mi", "no_mo") or run.startswith("m"):
      c.data.normalized_dir = self.path("normalized")
    if run == "no_mi":
      c.model.use_input_moe = False
    elif run == "no_mo":
      c.model.use_output_moe = False
    elif run.startswith("m"):
      c.model.num_experts = int(run[1:])
      c.model.top_k = min(c.model.top_k, max(c.model.num_experts, 1))
    elif run not in COMPARISONS:
      raise ValueError(f"unknown stage-2 run {run!r}")
    return c

  def cla(self, task: str, run: str, seed: int) -> dict[str, Any]:
    from norface_jax.evaluation import classifier_eval
    from norface_jax.training import stage2
    c = self.cla_config(task, run, seed)
    workdir = self.path("cla", f"{task}_{run}_s{seed}")
    # The test split at the checkpoint selected on the validation subjects (a finished
    # run whose done.json was not written yet restores and scores it again).
    return classifier_eval.scalar_metrics(stage2.train_and_evaluate(c, workdir)["report"])

  def probe_data(self, task: str) -> dict[str, np.ndarray]:
    """uint8 faces and labels of the stage-2 splits: originals and the oracle I_n."""
    from norface_jax.evaluation import baselines
    return baselines.load_faces(self.cla_config(task, "oracle", 0).data, task)

  def baseline(self, task: str, kind: str, seed: int) -> dict[str, Any]:
    """One probe's test metric (percent): trivial, linear_orig, linear_oracle, cnn_orig."""
    from norface_jax.evaluation import baselines
    d = self.probe_data(task)
    p = self.c.probes
    classes = 7 if task == "fer" else None
    if kind == "trivial":
      value = baselines.trivial(task, d["train_y"], d["test_y"])
    elif kind in ("linear_orig", "linear_oracle"):
      stream = "image" if kind == "linear_orig" else "oracle"
      value = baselines.linear_probe(d[f"train_{stream}"], d["train_y"], d[f"test_{stream}"],
                                     d["test_y"], task, seed=seed, steps=p.linear_steps,
                                     num_classes=classes)
    elif kind == "cnn_orig":
      value = baselines.cnn_probe(d["train_image"], d["train_y"], d["test_image"], d["test_y"],
                                  task, seed=seed, steps=p.cnn_steps or self.c.cla.steps,
                                  batch_size=p.cnn_batch, widths=tuple(p.cnn_widths),
                                  num_classes=classes)
    else:
      raise ValueError(f"unknown baseline {kind!r}")
    return {"value": float(value)}

  def target_study(self) -> dict[str, Any]:
    scores = {}
    for target in self.c.target_candidates:
      tag = target.replace(":", "_").replace("/", "_")
      out = self.path("target_study", tag, "normalized")
      self.normalize(target, out)
      from norface_jax.training import stage2, stage2_config
      c = self.cla_config("au_detection", "learned", 0)
      c.data.normalized_dir = out
      stage2_config.set_selection(c, "val")  # Candidates compared on held-out subjects.
      # Chosen on the validation subjects' F1 (the test split stays for reporting).
      scores[target] = stage2.train_and_evaluate(c, self.path("target_study", tag, "cla"))[
          "selection"]["value"]
    best = max(scores, key=scores.get)
    return {"scores": scores, "best": best}

  # --- orchestration -------------------------------------------------------------------

  def stage2_jobs(self) -> list[tuple[str, str, tuple]]:
    seeds = tuple(self.c.seeds)
    jobs = []
    for task in TASKS:
      for kind in ("trivial", "linear_orig", "linear_oracle", "cnn_orig"):
        for seed in (seeds[:1] if kind == "trivial" else seeds):
          jobs.append((f"baselines/{task}_{kind}_s{seed}", "baseline", (task, kind, seed)))
      for run in COMPARISONS:
        for seed in seeds:
          jobs.append((f"cla/{task}_{run}_s{seed}", "cla", (task, run, seed)))
    for run in self.c.ablations:
      jobs.append((f"cla/au_detection_{run}_s{seeds[0]}", "cla", ("au_detection", run, seeds[0])))
    # The longest first, so that the workers finish together.
    cost = lambda j: (j[1] == "cla") * (1 + (j[2][1] != "wo_idn")) + (j[2][1] == "cnn_orig")
    return sorted(jobs, key=cost, reverse=True)

  def run(self) -> dict[str, Any]:
    self.step("perception", self.perception)
    self.step("mae", self.mae)
    stage1 = self.step("stage1", self.stage1)
    target = self.c.target
    study = None
    if self.c.target_candidates:
      study = self.step("target_study", self.target_study)
      target = study["best"]
      if target != self.c.target:
        raise ValueError(f"the target study picked {target}; set config.target={target!r} so "
                         "that the oracle and DeepFN rows use the same target person")
    norm = self.step("normalized", lambda: self.normalize(target, self.path("normalized")))
    deepfn = self.step("deepfn", lambda: self.deepfn(target))
    results = self.jobs(self.stage2_jobs())
    from norface_jax import pipeline_report
    path = pipeline_report.write(self, stage1=stage1, norm=norm, deepfn=deepfn, results=results,
                                 study=study, target=target)
    logging.info("[pipeline] report: %s (%.0fs in all).", path, time.perf_counter() - self.t0)
    return {"report": path, "results": results}
