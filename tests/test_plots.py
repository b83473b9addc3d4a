"""Tests for norface_jax.evaluation.plots: router statistics by hand, figures render."""

import numpy as np
import pytest

from norface_jax.evaluation import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# B = 4 samples, K = 2, E = 3 experts, L = 2 labels.
TOPK = np.array([[0, 1], [1, 2], [0, 2], [0, 1]])
LABELS = np.array([[1, 0], [1, 1], [0, 1], [0, 0]])
GATES = np.array([[0.6, 0.4, 0.0], [0.0, 0.7, 0.3], [0.5, 0.0, 0.5], [0.2, 0.8, 0.0]])


def test_router_label_matrix_topk_by_hand():
  # Label 0 is positive for samples 0 {0, 1} and 1 {1, 2}: experts 0, 1, 2 are
  # chosen 1, 2, 1 times of 2 -> [0.5, 1, 0.5]. Label 1: samples 1 {1, 2} and
  # 2 {0, 2} -> [0.5, 0.5, 1]. Sample 3 has no label and does not count.
  m = plots.router_label_matrix(TOPK, LABELS, num_experts=3)
  np.testing.assert_allclose(m, [[0.5, 0.5], [1.0, 0.5], [0.5, 1.0]])
  np.testing.assert_allclose(m.sum(0), 2.0)  # Columns sum to K.


def test_router_label_matrix_gates_by_hand():
  # Label 0: mean of gates of samples 0, 1 = [0.3, 0.55, 0.15];
  # label 1: samples 1, 2 = [0.25, 0.35, 0.4].
  m = plots.router_label_matrix(GATES, LABELS, num_experts=3)
  np.testing.assert_allclose(m, [[0.3, 0.25], [0.55, 0.35], [0.15, 0.4]])


def test_router_label_matrix_class_ids():
  ids = np.array([0, 1, 1, 2])
  m = plots.router_label_matrix(TOPK, ids, num_experts=3, num_labels=4)
  assert m.shape == (3, 4)
  np.testing.assert_allclose(m[:, 0], [1, 1, 0])
  np.testing.assert_allclose(m[:, 1], [0.5, 0.5, 1])
  assert np.all(np.isnan(m[:, 3]))
  with pytest.raises(ValueError):
    plots.router_label_matrix(TOPK + 1, ids, num_experts=3)


def test_figures_render_png_and_array(tmp_path):
  m = plots.router_label_matrix(TOPK, np.array([0, 1, 1, 2]), 3, num_labels=4)
  figs = [
      plots.router_heatmap(m, None, ["neutral", "happy", "sad", "fear"], "Output MoE"),
      plots.per_au_bars({"w/o Idn": np.array([0.5, 0.6]), "Norface": np.array([0.55, 0.7])},
                        [1, 2], "F1"),
      plots.confusion_matrix_plot(np.array([[5, 1], [0, 3]]), ["a", "b"]),
  ]
  for fig in figs:
    png = plots.figure_to_png(fig)
    assert png.startswith(PNG_MAGIC) and len(png) > 1000
    arr = plots.figure_to_array(fig)
    assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[-1] == 3
  path = tmp_path / "cm.png"
  plots.save_figure(figs[2], str(path))
  assert path.read_bytes().startswith(PNG_MAGIC)


def test_image_grid_layout():
  rng = np.random.default_rng(0)
  orig = rng.integers(0, 256, (3, 8, 10, 3), dtype=np.uint8)
  norm = rng.random((2, 8, 10, 1))      # Float grayscale, one sample fewer.
  grid = plots.image_grid([orig, norm], pad=2)
  assert grid.dtype == np.uint8 and grid.shape == (2 * 10 + 2, 3 * 12 + 2, 3)
  np.testing.assert_array_equal(grid[2:10, 2:12], orig[0])
  np.testing.assert_array_equal(grid[12:20, 14:24, 1],
                                np.round(norm[1, ..., 0] * 255).astype(np.uint8))
  assert np.all(grid[12:20, 26:36] == 255)  # Missing sample is white.
  titled = plots.image_grid([orig, norm], ["original", "normalized"], pad=2, title_width=20)
  assert titled.shape == (22, 2 + 22 + 36, 3)
  np.testing.assert_array_equal(titled[2:10, 24:34], orig[0])
  assert titled[2:10, 2:22].min() < 255  # Some title ink.
