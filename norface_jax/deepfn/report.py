"""Protocol outputs: a table-5-style markdown file, a bar chart, an example grid."""

from __future__ import annotations

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np
from PIL import Image

from norface_jax.evaluation import plots

LABELS = {"original": "Original", "deepfn": "DeepFN"}


def _cell(entry) -> str:
  if not entry:
    return "-"
  return f"{100 * entry['mean']:.1f} ({100 * entry['std']:.1f})"


def _p(p: float) -> str:
  if p != p:
    return "n/a"
  return "< 0.001" if p < 1e-3 else f"{p:.3f}"


def write_markdown(path: str, summary: dict, info: dict, config) -> None:
  """Table 5 (mean (std) of the per-subject score, %) and the t-tests."""
  c = config
  lines = [
      "| Condition | Group | Analysis | Train→Test | #AUs | Reps x splits | n | Original "
      "| DeepFN |",
      "|---|---|---|---|---|---|---|---|---|"]
  for name, row in summary["rows"].items():
    n_aus = len(info["aus"]["common"] if row["group"] == "dataset" else info["aus"]["main"])
    n = row.get("original", {}).get("n", 0)
    lines.append(f"| {name} | {row['group']} | {row['analysis']} | "
                 f"{', '.join(row['directions'])} | {n_aus} | "
                 f"{row.get('repetitions', info['repetitions'])}x"
                 f"{row.get('splits_per_rep', len(row['directions']))} | {n} | "
                 f"{_cell(row.get('original'))} | {_cell(row.get('deepfn'))} |")
  lines += ["", "Two-sample t-tests (`scipy.stats.ttest_ind`) over the per-subject scores:", "",
            "| Group | Comparison | t | p | n_a | n_b |", "|---|---|---|---|---|---|"]
  for group, tests in summary["tests"].items():
    for comp, t in tests.items():
      lines.append(f"| {group} | {comp} | {t['t']:.2f} | {_p(t['p'])} | {t['n_a']} | "
                   f"{t['n_b']} |")
  effects = summary.get("test_groups", {})
  if effects:
    lines += ["", "By the test set's group, whatever the training group (mean score, %; "
              "t-test between the two test groups):", "",
              "| Group | Input | Test group A | Test group B | t | p |", "|---|---|---|---|---|---|"]
    for group, e in effects.items():
      for kind in LABELS:
        groups = [g for g in e[kind] if g != "t-test"]
        cells = [f"{g} {100 * e[kind][g]['mean']:.1f} (n={e[kind][g]['n']})" for g in groups]
        t = e[kind]["t-test"]
        lines.append(f"| {group} | {LABELS[kind]} | {cells[0]} | {cells[1]} | {t['t']:.2f} | "
                     f"{_p(t['p'])} |")
  person = summary["rows"].get("Person-independent", {}).get("per_au", {})
  if "gain" in person:
    aus = info["aus"]["main"]
    lines += ["", "Person-independent, per AU (the paper's Fig. 4; score %):", "",
              "| Input | " + " | ".join(aus) + " |", "|---|" + "---|" * len(aus)]
    for kind, label in (*LABELS.items(), ("gain", "Gain")):
      lines.append(f"| {label} | " + " | ".join(f"{100 * v:.1f}" for v in person[kind]) + " |")
  ae = info["ae"]
  lines += ["", f"Template: {info['template']} (highest median AU activation). Subjects after "
            f"excluding it: {info['subjects']}. AEs: {ae['persons']} persons x "
            f"{ae['iterations']} iterations ({c.ae.mode}, {ae['seconds']:.0f} s), L1 "
            f"{ae['first_loss_x']:.3f} -> {ae['final_loss_x']:.3f} (person), "
            f"{ae['final_loss_y']:.3f} (template). AE input {c.preprocess.ae_size}x"
            f"{c.preprocess.ae_size}, LeNet input {c.preprocess.lenet_size}x"
            f"{c.preprocess.lenet_size}; LeNet {c.lenet.epochs} epochs, lr {c.lenet.lr}. "
            f"Total {info['seconds']:.0f} s."]
  if info.get("command"):
    lines += ["", f"Command: `{info['command']}`"]
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")


def chart(summary: dict) -> Figure:
  """Grouped bars (Original, DeepFN) per condition with standard-error bars."""
  names = list(summary["rows"])
  fig = Figure(figsize=(max(6.0, 0.9 * len(names) + 1), 3.6), dpi=80)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  x = np.arange(len(names))
  for i, kind in enumerate(LABELS):
    m = [100 * summary["rows"][n].get(kind, {}).get("mean", np.nan) for n in names]
    e = [100 * summary["rows"][n].get(kind, {}).get("sem", 0.0) for n in names]
    ax.bar(x + (i - 0.5) * 0.38, m, 0.38, yerr=e, capsize=3, label=LABELS[kind])
  ax.set_xticks(x, labels=names, rotation=35, ha="right", fontsize=8)
  ax.set_ylabel("(F1 + accuracy) / 2, %")
  vals = [100 * r[k]["mean"] for r in summary["rows"].values() for k in LABELS if k in r]
  if vals:
    ax.set_ylim(max(0.0, min(vals) - 10), min(100.0, max(vals) + 8))
  ax.legend(fontsize=8)
  ax.set_title("DeepFN protocol: mean and standard error", fontsize=9)
  fig.tight_layout()
  return fig


def write_chart(path: str, summary: dict) -> None:
  plots.save_figure(chart(summary), path)


def write_per_au_chart(path: str, summary: dict, aus) -> bool:
  """The paper's Fig. 4: person-independent per-AU scores, original vs DeepFN."""
  per = summary["rows"].get("Person-independent", {}).get("per_au", {})
  if "gain" not in per:
    return False
  fig = plots.per_au_bars({LABELS[k]: 100 * np.asarray(per[k]) for k in LABELS}, list(aus),
                          ylabel="(F1 + accuracy) / 2, %")
  plots.save_figure(fig, path)
  return True


def write_examples(path: str, pools, inputs, main: str, other: str, template, n: int = 8) -> None:
  """Rows: template frames, originals, DeepFN outputs (a few subjects of each dataset)."""
  rows, titles = [], []
  tsubj = template[1]
  for d in [d for d in (main, other) if d in inputs]:
    subj = pools[d].subjects()
    pick = []
    for s in subj:
      if (d, s) == template:
        continue
      pick.append(np.flatnonzero(pools[d].subject == s)[0])
      if len(pick) == n:
        break
    idx = np.asarray(pick)
    if d == main:  # inputs[main] no longer holds the template's rows.
      keep = np.flatnonzero(pools[d].subject != tsubj)
      idx = np.searchsorted(keep, idx)
    rows += [inputs[d]["original"][idx], inputs[d]["deepfn"][idx]]
    titles += [f"{d}", "DeepFN"]
  grid = plots.image_grid(rows, titles, title_width=16)
  Image.fromarray(grid).convert("L").save(path, optimize=True)  # All panels are gray.
