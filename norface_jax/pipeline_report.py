"""The pipeline's report: markdown with PNG figures of what the run measured."""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import numpy as np

from norface_jax.evaluation import plots
from norface_jax.training import writers

ABLATION_NAMES = {"idn": "full (m=4, k=2)", "no_mi": "w/o M_i", "no_mo": "w/o M_o",
                  "m0": "m = 0 (dense MLPs)", "m2": "m = 2", "m4": "m = 4"}


def _loss_curves(runs: dict[str, str], path: str) -> None:
  from matplotlib.figure import Figure
  fig = Figure(figsize=(7, 3.2), dpi=100)
  ax = fig.add_subplot(1, 1, 1)
  for label, logdir in runs.items():
    rows = [r for r in writers.read_jsonl(logdir) if "training_loss" in r]
    if rows:
      ax.plot([r["step"] for r in rows], [r["training_loss"] for r in rows], label=label)
  ax.set_xlabel("step")
  ax.set_ylabel("training loss")
  ax.legend(fontsize=7)
  fig.tight_layout()
  plots.save_figure(fig, path)


def _fmt(v: Any) -> str:
  return f"{100 * v:.1f}" if isinstance(v, float) and np.isfinite(v) else "n/a"


def write(pipe, *, stage1: dict, norm: dict, results: dict[str, dict], study: dict | None,
          target: str) -> str:
  fig_dir = pipe.path("figures")
  os.makedirs(fig_dir, exist_ok=True)
  lines = ["# Norface on SynthFACS: pipeline report", "",
           f"Workdir `{pipe.workdir}`; preset `{pipe.c.preset}` (person-independent fold 0), "
           f"{pipe.c.image_size} px, encoder `{pipe.c.encoder}`, stage-2 runs of {pipe.c.cla_steps} "
           f"steps. Every number below was measured by this run; nothing else is claimed.", ""]

  lines += ["## Stage 1: identity normalization", "",
            f"Fixed target: `{target}`. Original | target | normalized:", "",
            "![normalized faces](figures/normalized_faces.png)", "",
            "| measure | value |", "| --- | --- |"]
  lines += [f"| {k} | {v:.4g} |" for k, v in sorted(stage1.items())
            if k != "seconds" and isinstance(v, (int, float))]
  lines += ["", f"Normalization throughput (images/s after compile): "
            + ", ".join(f"{k} {v:.0f}" for k, v in norm.items() if k != "seconds"), ""]

  if study:
    lines += ["## Target-identity study (paper Fig. 4)", "",
              "| candidate target | AU F1 mean (%) |", "| --- | --- |"]
    lines += [f"| `{t}`{' (kept)' if t == study['best'] else ''} | {_fmt(s)} |"
              for t, s in sorted(study["scores"].items(), key=lambda kv: -kv[1])]
    lines.append("")

  au_o, au_n = results["au_detection_orig"], results["au_detection_idn"]
  fer_o, fer_n = results["fer_orig"], results["fer_idn"]
  lines += ["## Stage 2 with vs without identity normalization (paper Table 7)", "",
            "| method | AU detection F1 mean (%) | FER accuracy (%) |", "| --- | --- | --- |",
            f"| w/o Idn (original stream only) | {_fmt(au_o.get('f1/mean'))} | {_fmt(fer_o.get('accuracy'))} |",
            f"| with Idn (original + normalized) | {_fmt(au_n.get('f1/mean'))} | {_fmt(fer_n.get('accuracy'))} |",
            ""]
  aus = [k.split("/", 1)[1] for k in au_n if k.startswith("f1/AU")]
  if aus:
    bars = {"w/o Idn": np.array([au_o.get(f"f1/{a}", np.nan) for a in aus]),
            "with Idn": np.array([au_n.get(f"f1/{a}", np.nan) for a in aus])}
    plots.save_figure(plots.per_au_bars(bars, aus, ylabel="F1"), os.path.join(fig_dir, "per_au_f1.png"))
    lines += ["![per-AU F1](figures/per_au_f1.png)", "",
              "| AU | " + " | ".join(aus) + " |", "| --- |" + " --- |" * len(aus),
              "| w/o Idn | " + " | ".join(_fmt(au_o.get(f"f1/{a}")) for a in aus) + " |",
              "| with Idn | " + " | ".join(_fmt(au_n.get(f"f1/{a}")) for a in aus) + " |", ""]

  lines += ["## MoE ablation, AU detection (paper Table 11)", "",
            "| variant | F1 mean (%) |", "| --- | --- |",
            f"| {ABLATION_NAMES['idn']} | {_fmt(au_n.get('f1/mean'))} |"]
  lines += [f"| {ABLATION_NAMES.get(r, r)} | {_fmt(results.get(f'au_detection_{r}', {}).get('f1/mean'))} |"
            for r in pipe.c.ablations]
  lines.append("")

  for task in ("au_detection", "fer"):
    src = pipe.path("cla", f"{task}_idn", "router_heatmap.png")
    if os.path.exists(src):
      shutil.copy(src, os.path.join(fig_dir, f"router_{task}.png"))
  lines += ["## Router decisions of the output MoE (paper Fig. 8)", "",
            "![router AU](figures/router_au_detection.png) ![router FER](figures/router_fer.png)", ""]

  runs = {f"stage 2 {k}": pipe.path("cla", k) for k in results}
  _loss_curves(runs, os.path.join(fig_dir, "loss_curves.png"))
  _loss_curves({"stage 1 (F_nor)": pipe.path("stage1")}, os.path.join(fig_dir, "stage1_loss.png"))
  lines += ["## Loss curves", "", "![stage 2](figures/loss_curves.png)",
            "![stage 1](figures/stage1_loss.png)", ""]

  timing = {}
  for d in ["perception", "mae", "stage1", "target_study", "normalized"] + [f"cla/{k}" for k in results]:
    f = pipe.path(d, "done.json")
    if os.path.exists(f):
      timing[d] = json.load(open(f)).get("seconds", float("nan"))
  lines += ["## Time per step (s, this run)", "", "| step | seconds |", "| --- | --- |"]
  lines += [f"| {k} | {v:.0f} |" for k, v in timing.items()]
  path = pipe.path("report.md")
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
  return path
