"""The pipeline's report: `report.md` with PNG figures, and `report.json`.

Every stage-2 number stands beside its floor and its ceiling: the trivial predictor, a
linear classifier on pixels (of the originals, and of the oracle I_n), a plain CNN on
the originals, and stage 2 with SynthFACS's oracle I_n, each as the mean and standard
deviation over the config's seeds. The headline is the share of the oracle's gain that
a normalization recovers: (metric(with I_n) - metric(w/o Idn)) / (metric(oracle) -
metric(w/o Idn)).

`report.json`: {"au_detection": ROWS, "fer": ROWS, "oracle_gain_recovered": {task: f},
"stage1": {...}}, where ROWS maps `trivial`, `linear_orig`, `linear_oracle`, `cnn_orig`,
`wo_idn`, `learned`, `deepfn`, `oracle` to {"mean", "std", "seeds"} (F1 or accuracy in
percent, `seeds` the per-seed values) plus `oracle_gain_recovered` (the learned stage 1)
and `deepfn_gain_recovered`; "stage1" holds the AU regressor's ICC on unseen subjects of
I_n, I_o and the true I_n, and the pixel error of I_n to the true I_n.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import numpy as np

from norface_jax.evaluation import plots
from norface_jax.training import writers

ABLATION_NAMES = {"learned": "full (m=4, k=2)", "no_mi": "w/o M_i", "no_mo": "w/o M_o",
                  "m0": "m = 0 (dense MLPs)", "m2": "m = 2", "m4": "m = 4"}
ROWS = (("trivial", "trivial predictor (all AUs present / majority class)"),
        ("linear_orig", "linear classifier on pixels, originals"),
        ("linear_oracle", "linear classifier on pixels, oracle I_n"),
        ("cnn_orig", "plain CNN, originals"),
        ("wo_idn", "stage 2 w/o Idn (original stream only)"),
        ("learned", "stage 2 + I_n of the learned stage 1 (F_nor)"),
        ("deepfn", "stage 2 + DeepFN's normalized faces"),
        ("oracle", "stage 2 + oracle I_n (SynthFACS's true normalized face)"))
METRIC = {"au_detection": "f1/mean", "fer": "accuracy"}
TASK_TITLES = {"au_detection": "AU detection, mean F1 (%)", "fer": "FER accuracy (%)"}


def summary(values: list[float]) -> dict[str, Any]:
  """{"mean", "std" (population, 0 for one seed), "seeds"} of per-seed values."""
  v = np.asarray(values, np.float64)
  return {"mean": float(np.mean(v)), "std": float(np.std(v)), "seeds": [float(x) for x in v]}


def gain_recovered(with_in: float, without: float, oracle: float) -> float:
  """(with - w/o) / (oracle - w/o); NaN when the oracle gains nothing."""
  gap = oracle - without
  return float((with_in - without) / gap) if gap > 0 else float("nan")


def task_rows(results: dict[str, dict], task: str, seeds) -> dict[str, Any]:
  """The rows of one task from the pipeline's job results (step name -> done.json)."""
  metric = METRIC[task]
  rows: dict[str, Any] = {}
  for key, _ in ROWS:
    if key in ("trivial", "linear_orig", "linear_oracle", "cnn_orig"):
      runs = [results.get(f"baselines/{task}_{key}_s{s}") for s in seeds]
      values = [r["value"] for r in runs if r]
    else:
      runs = [results.get(f"cla/{task}_{key}_s{s}") for s in seeds]
      values = [100.0 * r[metric] for r in runs if r]
    if values:
      rows[key] = summary(values)
  if all(k in rows for k in ("wo_idn", "oracle")):
    for key, name in (("learned", "oracle_gain_recovered"), ("deepfn", "deepfn_gain_recovered")):
      if key in rows:
        rows[name] = gain_recovered(rows[key]["mean"], rows["wo_idn"]["mean"],
                                    rows["oracle"]["mean"])
  return rows


def _cell(row: dict | None) -> str:
  if not row:
    return "n/a"
  return f"{row['mean']:.1f} ± {row['std']:.1f}"


def _fmt(v: Any, scale: float = 1.0, digits: int = 3) -> str:
  return f"{scale * v:.{digits}g}" if isinstance(v, (int, float)) and np.isfinite(v) else "n/a"


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


def comparison_grid(pipe, target: str, path: str, num: int = 8) -> None:
  """The same unseen faces as original | target | learned I_n | DeepFN | oracle I_n."""
  from norface_jax.data import images as images_lib
  from norface_jax.data import registry
  data = pipe.cla_config("au_detection", "oracle", pipe.c.seeds[0]).data
  source = registry.make_source(data, "test", task="au_detection")
  picks = np.linspace(0, len(source) - 1, num).round().astype(int)
  items = [source[int(i)] for i in picks]
  target_u8, _ = images_lib.load_target(target, data)
  rows = [np.stack([it["image"] for it in items]), np.stack([target_u8] * len(items))]
  titles = ["orig", "target"]
  for name, root in (("F_nor", pipe.path("normalized")), ("DeepFN", pipe.path("deepfn"))):
    rel = [images_lib.paired_relative_path({"index": it["index"]}, "test") for it in items]
    if all(os.path.exists(os.path.join(root, r)) for r in rel):
      rows.append(np.stack([images_lib.load_image(os.path.join(root, r), data.image_size)
                            for r in rel]))
      titles.append(name)
  rows.append(np.stack([it["image_norm"] for it in items]))
  titles.append("oracle")
  os.makedirs(os.path.dirname(path), exist_ok=True)
  from PIL import Image
  Image.fromarray(plots.image_grid(rows, titles)).save(path)


def stage1_summary(stage1: dict) -> dict[str, float]:
  keys = {"icc_In": "expression/icc_In", "icc_Io": "expression/icc_Io",
          "icc_true_In": "expression/icc_Istar", "mse_In_to_true_In": "pixels/mse_In_to_Istar",
          "target_rate_In": "identity/target_rate_In"}
  return {k: float(stage1[v]) for k, v in keys.items() if v in stage1}


def write(pipe, *, stage1: dict, norm: dict, deepfn: dict, results: dict[str, dict],
          study: dict | None, target: str) -> str:
  fig_dir = pipe.path("figures")
  os.makedirs(fig_dir, exist_ok=True)
  seeds = tuple(pipe.c.seeds)
  s2 = pipe.c.cla
  tables = {task: task_rows(results, task, seeds) for task in ("au_detection", "fer")}
  report = dict(tables)
  report["oracle_gain_recovered"] = {t: tables[t].get("oracle_gain_recovered", float("nan"))
                                     for t in tables}
  report["stage1"] = stage1_summary(stage1)
  report["setting"] = {"preset": pipe.c.preset, "image_size": pipe.c.image_size,
                       "encoder": pipe.c.encoder, "seeds": list(seeds), "target": target,
                       "stage2": s2.to_dict() if hasattr(s2, "to_dict") else dict(s2),
                       "probes": dict(pipe.c.probes)}
  with open(pipe.path("report.json"), "w") as f:
    json.dump(report, f, indent=1, default=list)

  lines = ["# Norface on SynthFACS: pipeline report", "",
           f"Workdir `{pipe.workdir}`; preset `{pipe.c.preset}` (person-independent fold 0), "
           f"{pipe.c.image_size} px, encoder `{pipe.c.encoder}`. Stage 2: "
           f"{s2.frames_per_subject} frames per training subject, {s2.steps} steps of batch "
           f"{s2.batch} at lr {s2.lr}; the test split (subjects never trained on) has "
           f"{s2.test_frames_per_subject} frames per subject and is scored at the last step. "
           f"Every cell is the mean ± standard deviation over seeds {list(seeds)}. "
           "Every number below was measured by this run; nothing else is claimed.", ""]

  lines += ["## Stage 2 against its floor and its ceiling (paper Table 7)", "",
            "| input | " + " | ".join(TASK_TITLES[t] for t in tables) + " |",
            "| --- |" + " --- |" * len(tables)]
  for key, title in ROWS:
    lines.append(f"| {title} | " + " | ".join(_cell(tables[t].get(key)) for t in tables) + " |")
  lines.append("| share of the oracle's gain recovered by F_nor | "
               + " | ".join(_fmt(tables[t].get("oracle_gain_recovered"), digits=2) for t in tables)
               + " |")
  lines.append("| share of the oracle's gain recovered by DeepFN | "
               + " | ".join(_fmt(tables[t].get("deepfn_gain_recovered"), digits=2) for t in tables)
               + " |")
  lines += ["", "Read each stage-2 row against the rows above it: a classifier that does "
            "not beat the linear probe on the same faces has not learned what the pixels "
            "carry, and a gain over a baseline that is not a real attempt exaggerates.", ""]

  comparison_grid(pipe, target, os.path.join(fig_dir, "comparison_faces.png"))
  lines += ["Unseen test faces: original | target | F_nor's I_n | DeepFN | oracle I_n:", "",
            "![faces](figures/comparison_faces.png)", ""]

  au = {run: [results.get(f"cla/au_detection_{run}_s{s}") for s in seeds]
        for run in ("wo_idn", "learned", "deepfn", "oracle")}
  aus = [k.split("/", 1)[1] for k in (au["oracle"][0] or {}) if k.startswith("f1/AU")]
  if aus:
    bars = {run: np.mean([[r[f"f1/{a}"] for a in aus] for r in rs if r], 0)
            for run, rs in au.items() if any(rs)}
    plots.save_figure(plots.per_au_bars(bars, aus, ylabel="F1 (mean over seeds)"),
                      os.path.join(fig_dir, "per_au_f1.png"))
    lines += ["![per-AU F1](figures/per_au_f1.png)", ""]

  st = report["stage1"]
  lines += ["## Stage 1: identity normalization", "",
            f"Fixed target: `{target}`. The independent AU-intensity regressor's ICC on unseen "
            "subjects, against the AU intensities of I_o:", "",
            "| measure | value |", "| --- | --- |",
            f"| ICC on I_n (F_nor) | {_fmt(st.get('icc_In'))} |",
            f"| ICC on I_o (the originals) | {_fmt(st.get('icc_Io'))} |",
            f"| ICC on the true I_n | {_fmt(st.get('icc_true_In'))} |",
            f"| pixel MSE of I_n to the true I_n | {_fmt(st.get('mse_In_to_true_In'))} |",
            f"| share of I_n the identity classifier assigns to the target | "
            f"{_fmt(st.get('target_rate_In'))} |", "",
            "Original | target | normalized (F_nor):", "",
            "![normalized faces](figures/normalized_faces.png)", "",
            f"Normalization throughput (images/s after compile): "
            + ", ".join(f"{k} {v:.0f}" for k, v in norm.items() if k != "seconds"),
            f"DeepFN: {deepfn.get('persons', 0)} per-person autoencoders, "
            f"{deepfn.get('iterations', 0)} iterations each, L1 "
            f"{_fmt(deepfn.get('first_loss_x'))} -> {_fmt(deepfn.get('final_loss_x'))}.", ""]

  if study:
    lines += ["## Target-identity study (paper Fig. 4)", "",
              "| candidate target | AU F1 mean (%) |", "| --- | --- |"]
    lines += [f"| `{t}`{' (kept)' if t == study['best'] else ''} | {_fmt(s, 100)} |"
              for t, s in sorted(study["scores"].items(), key=lambda kv: -kv[1])]
    lines.append("")

  if pipe.c.ablations:
    s0 = seeds[0]
    get = lambda run: results.get(f"cla/au_detection_{run}_s{s0}", {}).get("f1/mean")  # noqa: E731
    lines += [f"## MoE ablation, AU detection, seed {s0} (paper Table 11)", "",
              "| variant | F1 mean (%) |", "| --- | --- |",
              f"| {ABLATION_NAMES['learned']} | {_fmt(get('learned'), 100)} |"]
    lines += [f"| {ABLATION_NAMES.get(r, r)} | {_fmt(get(r), 100)} |" for r in pipe.c.ablations]
    lines.append("")

  for task in ("au_detection", "fer"):
    src = pipe.path("cla", f"{task}_oracle_s{seeds[0]}", "router_heatmap.png")
    if os.path.exists(src):
      shutil.copy(src, os.path.join(fig_dir, f"router_{task}.png"))
  lines += ["## Router decisions of the output MoE, with the oracle I_n (paper Fig. 8)", "",
            "![router AU](figures/router_au_detection.png) ![router FER](figures/router_fer.png)", ""]

  runs = {f"{task} {run}": pipe.path("cla", f"{task}_{run}_s{seeds[0]}")
          for task in ("au_detection", "fer") for run in ("wo_idn", "learned", "deepfn", "oracle")}
  _loss_curves(runs, os.path.join(fig_dir, "loss_curves.png"))
  _loss_curves({"stage 1 (F_nor)": pipe.path("stage1")}, os.path.join(fig_dir, "stage1_loss.png"))
  lines += [f"## Loss curves (seed {seeds[0]})", "", "![stage 2](figures/loss_curves.png)",
            "![stage 1](figures/stage1_loss.png)", ""]

  timing = {}
  for d in ["perception", "mae", "stage1", "target_study", "normalized", "deepfn"] + sorted(results):
    f = pipe.path(d, "done.json")
    if os.path.exists(f):
      with open(f) as fh:
        timing[d] = json.load(fh).get("seconds", float("nan"))
  lines += ["## Time per step (s, this run; jobs ran in "
            f"{pipe.c.get('workers', 1)} worker processes)", "", "| step | seconds |",
            "| --- | --- |"]
  lines += [f"| {k} | {v:.0f} |" for k, v in timing.items()]
  path = pipe.path("report.md")
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
  return path
