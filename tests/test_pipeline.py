"""The whole pipeline in its smallest form: every step, the report, and resumption."""

import json
import os

from norface_jax import configlib, pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS = ("trivial", "linear_orig", "linear_oracle", "cnn_orig", "wo_idn", "learned", "deepfn",
        "oracle")


def test_pipeline_smallest_form_end_to_end_and_resume(tmp_path):
  config = configlib.load_config(os.path.join(ROOT, "configs", "synthetic_pipeline.py") + ":tiny")
  result = pipeline.Pipeline(config, str(tmp_path)).run()
  report = open(result["report"]).read()
  for heading in ("against its floor and its ceiling", "Stage 1: identity normalization",
                  "MoE ablation", "Router decisions", "Loss curves"):
    assert heading in report, heading
  for fig in ("normalized_faces.png", "comparison_faces.png", "per_au_f1.png",
              "router_au_detection.png", "router_fer.png", "loss_curves.png"):
    assert os.path.getsize(tmp_path / "figures" / fig) > 1000, fig
  # report.json: every row of both tasks, as mean / std / per-seed values.
  rep = json.load(open(tmp_path / "report.json"))
  for task in ("au_detection", "fer"):
    for row in ROWS:
      entry = rep[task][row]
      assert set(entry) == {"mean", "std", "seeds"}, (task, row)
      assert len(entry["seeds"]) == (1 if row == "trivial" else len(config.seeds))
      assert 0.0 <= entry["mean"] <= 100.0, (task, row, entry)
    assert "oracle_gain_recovered" in rep[task]
  assert set(rep["stage1"]) >= {"icc_In", "icc_Io", "icc_true_In"}
  # Stage 2's precomputed mode read what F_nor and DeepFN wrote.
  for d in ("normalized", "deepfn"):
    assert any(f.endswith(".png") for _, _, fs in os.walk(tmp_path / d) for f in fs), d
  # An interrupted pipeline resumes: a deleted step is redone, finished ones are skipped.
  os.remove(tmp_path / "cla" / "fer_learned_s0" / "done.json")
  before = json.load(open(tmp_path / "stage1" / "done.json"))
  pipeline.Pipeline(config, str(tmp_path)).run()
  assert json.load(open(tmp_path / "stage1" / "done.json")) == before
  assert os.path.exists(tmp_path / "cla" / "fer_learned_s0" / "done.json")


def test_jobs_in_worker_processes_match_in_process(tmp_path):
  """`config.workers` > 1 runs jobs in spawned processes; results land in done.json alike."""
  config = configlib.load_config(os.path.join(ROOT, "configs", "synthetic_pipeline.py") + ":tiny")
  config.workers = 2
  jobs = [(f"baselines/{task}_trivial_s0", "baseline", (task, "trivial", 0))
          for task in ("au_detection", "fer")]
  parallel = pipeline.Pipeline(config, str(tmp_path / "parallel")).jobs(jobs)
  config.workers = 1
  serial = pipeline.Pipeline(config, str(tmp_path / "serial")).jobs(jobs)
  for name, _, _ in jobs:
    assert os.path.exists(tmp_path / "parallel" / name / "done.json")
    assert parallel[name]["value"] == serial[name]["value"]
