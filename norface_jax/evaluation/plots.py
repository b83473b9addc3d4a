"""Figures for reports and TensorBoard: router statistics, per-AU bars, confusion.

Plot functions return a `matplotlib.figure.Figure` drawn on an Agg canvas
(no pyplot, so no global state and no display needed); `figure_to_png`,
`figure_to_array` and `save_figure` turn it into PNG bytes, an (H, W, 3) uint8
array (for image summaries) or a file. `image_grid` builds a uint8 grid of
image batches directly.

Shape letters: B samples, K top-k, E experts, L labels (AUs or emotions).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import io

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np


def _new_figure(figsize: tuple[float, float], dpi: int = 100) -> Figure:
  fig = Figure(figsize=figsize, dpi=dpi)
  FigureCanvasAgg(fig)
  return fig


def figure_to_png(fig: Figure) -> bytes:
  """Encodes a figure as PNG bytes."""
  buf = io.BytesIO()
  fig.savefig(buf, format="png", bbox_inches="tight")
  return buf.getvalue()


def figure_to_array(fig: Figure) -> np.ndarray:
  """Renders a figure to an (H, W, 3) uint8 RGB array."""
  canvas = fig.canvas
  canvas.draw()
  return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_figure(fig: Figure, path: str) -> None:
  """Writes a figure to `path` (format from the extension)."""
  fig.savefig(path, bbox_inches="tight")


def _labels_multi_hot(labels, num_labels: int | None) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.ndim == 1:  # Class ids.
    n = int(labels.max()) + 1 if num_labels is None else num_labels
    return np.eye(n, dtype=np.float64)[labels.astype(np.int64)]
  if labels.ndim != 2:
    raise ValueError(f"labels must be (B,) ids or (B, L), got {labels.shape}")
  return (labels > 0.5).astype(np.float64)


def router_label_matrix(routing, labels, num_experts: int,
                        num_labels: int | None = None) -> np.ndarray:
  """Expert x label routing statistics (E, L), the paper's Fig. 8.

  routing: (B, K) integer top-k expert indices, or (B, E) float gate weights.
  labels: (B, L) multi-hot / one-hot, or (B,) class ids (then `num_labels`,
  default max + 1). For each label l, over the samples positive for l:
  - top-k indices: the fraction of them that have expert e among their top-k
    (a column sums to K);
  - gates: the mean gate weight given to expert e (a column sums to the mean
    total gate mass, 1 for normalised gates).
  Columns of labels with no positive sample are NaN.
  """
  y_bl = _labels_multi_hot(labels, num_labels)
  routing = np.asarray(routing)
  if np.issubdtype(routing.dtype, np.integer):
    if routing.ndim != 2:
      raise ValueError(f"top-k indices must be (B, K), got {routing.shape}")
    if routing.min() < 0 or routing.max() >= num_experts:
      raise ValueError(f"expert indices outside 0..{num_experts - 1}")
    # One-hot over experts, summed over k: (B, E) in {0, 1} for distinct indices.
    w_be = np.eye(num_experts, dtype=np.float64)[routing].sum(axis=1)
  else:
    if routing.ndim != 2 or routing.shape[1] != num_experts:
      raise ValueError(f"gates must be (B, {num_experts}), got {routing.shape}")
    w_be = routing.astype(np.float64)
  if w_be.shape[0] != y_bl.shape[0]:
    raise ValueError(f"{w_be.shape[0]} routing rows for {y_bl.shape[0]} label rows")
  counts_l = y_bl.sum(axis=0)
  mass_el = np.einsum("be,bl->el", w_be, y_bl)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(counts_l > 0, mass_el / counts_l, np.nan)


def _annotate(ax, values: np.ndarray, fmt: str) -> None:
  finite = values[np.isfinite(values)]
  mid = (finite.max() + finite.min()) / 2 if finite.size else 0.0
  for (i, j), v in np.ndenumerate(values):
    if np.isfinite(v):
      ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=7,
              color="white" if v > mid else "black")


def router_heatmap(matrix_el, expert_labels: Sequence[str] | None = None,
                   label_names: Sequence[str] | None = None,
                   title: str = "Router decisions") -> Figure:
  """Heatmap of an (E, L) `router_label_matrix`: experts as rows, labels as columns."""
  m = np.asarray(matrix_el, dtype=np.float64)
  e, l = m.shape
  expert_labels = expert_labels or [f"Expert {i + 1}" for i in range(e)]
  label_names = label_names or [str(i) for i in range(l)]
  fig = _new_figure((max(4.0, 0.6 * l + 2), max(2.5, 0.5 * e + 1.5)))
  ax = fig.add_subplot()
  im = ax.imshow(m, cmap="Blues", aspect="auto")
  ax.set_xticks(range(l), labels=list(label_names), rotation=45, ha="right")
  ax.set_yticks(range(e), labels=list(expert_labels))
  _annotate(ax, m, ".2f")
  ax.set_title(title)
  fig.colorbar(im, ax=ax)
  fig.tight_layout()
  return fig


def per_au_bars(values_by_condition: Mapping[str, np.ndarray], au_names: Sequence,
                ylabel: str, title: str | None = None) -> Figure:
  """Grouped bars: one group per AU, one bar per condition (e.g. with / without Idn)."""
  names = [f"AU{n}" if isinstance(n, (int, np.integer)) else str(n) for n in au_names]
  conditions = list(values_by_condition)
  for c in conditions:
    if len(np.asarray(values_by_condition[c])) != len(names):
      raise ValueError(f"condition {c!r} has {len(values_by_condition[c])} values "
                       f"for {len(names)} AUs")
  x = np.arange(len(names))
  width = 0.8 / max(len(conditions), 1)
  fig = _new_figure((max(5.0, 0.5 * len(names) * max(len(conditions), 1) + 2), 3.5))
  ax = fig.add_subplot()
  for i, c in enumerate(conditions):
    ax.bar(x + (i - (len(conditions) - 1) / 2) * width,
           np.asarray(values_by_condition[c], dtype=np.float64), width, label=c)
  ax.set_xticks(x, labels=names, rotation=45, ha="right")
  ax.set_ylabel(ylabel)
  if title:
    ax.set_title(title)
  ax.legend(fontsize=8)
  fig.tight_layout()
  return fig


def confusion_matrix_plot(cm, class_names: Sequence[str], normalize: bool = True,
                          title: str = "Confusion matrix") -> Figure:
  """Confusion matrix (rows true, columns predicted); rows normalised to recall."""
  cm = np.asarray(cm, dtype=np.float64)
  if normalize:
    with np.errstate(invalid="ignore", divide="ignore"):
      cm = cm / cm.sum(axis=1, keepdims=True)
  n = len(class_names)
  fig = _new_figure((max(4.0, 0.6 * n + 2), max(3.5, 0.6 * n + 1.5)))
  ax = fig.add_subplot()
  im = ax.imshow(cm, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None)
  ax.set_xticks(range(n), labels=list(class_names), rotation=45, ha="right")
  ax.set_yticks(range(n), labels=list(class_names))
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  _annotate(ax, cm, ".2f" if normalize else ".0f")
  ax.set_title(title)
  fig.colorbar(im, ax=ax)
  fig.tight_layout()
  return fig


def _to_uint8_rgb(x) -> np.ndarray:
  x = np.asarray(x)
  if x.ndim == 3:  # (B, H, W) grayscale.
    x = x[..., None]
  if x.ndim != 4 or x.shape[-1] not in (1, 3):
    raise ValueError(f"images must be (B, H, W[, 1 or 3]), got {x.shape}")
  if x.dtype != np.uint8:
    x = np.round(np.clip(x, 0.0, 1.0) * 255).astype(np.uint8)
  if x.shape[-1] == 1:
    x = np.repeat(x, 3, axis=-1)
  return x


def _text_strip(text: str, height: int, width: int) -> np.ndarray:
  """A (height, width, 3) white uint8 strip with `text` written in it."""
  dpi = 100
  fig = _new_figure((width / dpi, height / dpi), dpi=dpi)
  fig.text(0.5, 0.5, text, ha="center", va="center", rotation=90 if height > width else 0,
           fontsize=max(6, min(12, min(height, width) // 3)))
  drawn = figure_to_array(fig)[:height, :width]  # Rounding may cost a pixel.
  strip = np.full((height, width, 3), 255, dtype=np.uint8)
  strip[:drawn.shape[0], :drawn.shape[1]] = drawn
  return strip


def image_grid(rows: Sequence, row_titles: Sequence[str] | None = None,
               pad: int = 2, title_width: int = 24) -> np.ndarray:
  """Lays out image batches as a uint8 grid: one row per batch, one column per sample.

  rows: batches (B_r, H, W, 3|1) or (B_r, H, W), uint8 or float in [0, 1], of one
  (H, W); shorter rows are padded with white. row_titles: optional, written
  vertically in a strip `title_width` pixels wide left of each row.
  Returns (rows * (H + pad) + pad, ...) x 3 uint8.
  """
  batches = [_to_uint8_rgb(r) for r in rows]
  if not batches:
    raise ValueError("image_grid needs at least one row")
  h, w = batches[0].shape[1:3]
  for b in batches:
    if b.shape[1:3] != (h, w):
      raise ValueError(f"all images must be {h}x{w}, got {b.shape[1:3]}")
  if row_titles is not None and len(row_titles) != len(batches):
    raise ValueError(f"{len(row_titles)} titles for {len(batches)} rows")
  cols = max(b.shape[0] for b in batches)
  left = pad + (title_width + pad if row_titles is not None else 0)
  grid = np.full((len(batches) * (h + pad) + pad, left + cols * (w + pad), 3), 255,
                 dtype=np.uint8)
  for r, batch in enumerate(batches):
    y = pad + r * (h + pad)
    if row_titles is not None:
      grid[y:y + h, pad:pad + title_width] = _text_strip(row_titles[r], h, title_width)
    for c, img in enumerate(batch):
      x = left + c * (w + pad)
      grid[y:y + h, x:x + w] = img
  return grid
