"""The whole pipeline in its smallest form: every step, the report, and resumption."""

import json
import os

from norface_jax import configlib, pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_pipeline_smallest_form_end_to_end_and_resume(tmp_path):
  config = configlib.load_config(os.path.join(ROOT, "configs", "synthetic_pipeline.py") + ":tiny")
  result = pipeline.Pipeline(config, str(tmp_path)).run()
  report = open(result["report"]).read()
  for heading in ("Stage 1: identity normalization", "with vs without identity normalization",
                  "MoE ablation", "Router decisions", "Loss curves"):
    assert heading in report, heading
  for fig in ("normalized_faces.png", "per_au_f1.png", "router_au_detection.png",
              "router_fer.png", "loss_curves.png"):
    assert os.path.getsize(tmp_path / "figures" / fig) > 1000, fig
  for run in ("au_detection_orig", "au_detection_idn", "fer_orig", "fer_idn", "au_detection_m0"):
    assert os.path.exists(tmp_path / "cla" / run / "done.json"), run
  # Stage 2's precomputed mode read what the normalizer wrote.
  assert any(f.endswith(".png") for _, _, fs in os.walk(tmp_path / "normalized") for f in fs)
  # An interrupted pipeline resumes: a deleted step is redone, finished ones are skipped.
  os.remove(tmp_path / "cla" / "fer_idn" / "done.json")
  before = json.load(open(tmp_path / "stage1" / "done.json"))
  pipeline.Pipeline(config, str(tmp_path)).run()
  assert json.load(open(tmp_path / "stage1" / "done.json")) == before
  assert os.path.exists(tmp_path / "cla" / "fer_idn" / "done.json")
