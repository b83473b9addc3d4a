"""Measures how identity look-alikes hurt AU detection on unseen subjects.

A logistic regression on downsampled grayscale pixels learns one AU from a few subjects,
then is scored on held-out frames of those subjects and on unseen subjects. With
identity_bias > 0, some people look like the AU at rest, so the classifier partly
learns who they are and transfers worse; with identity_bias = 0 the gap shrinks.

  python -m norface_jax.data.synthfacs.bias_study
"""

from __future__ import annotations

import argparse

import numpy as np

from norface_jax.data import labels
from norface_jax.data.synthfacs import generate
from norface_jax.data.synthfacs import identity
from norface_jax.data.synthfacs import presets
from norface_jax.data.synthfacs import scene


def _features(images: np.ndarray) -> np.ndarray:
  """uint8 (N,S,S,3) -> (N, (S/2)^2) grayscale 2x2-pooled pixels in 0..1."""
  g = images.astype(np.float32).mean(-1) / 255
  n, s, _ = g.shape
  return g.reshape(n, s // 2, 2, s // 2, 2).mean((2, 4)).reshape(n, -1)


def _render(subjects, frames, au, identity_bias, size, seed):
  """Near-frontal lab faces where `au` is on in half the frames, plus random other AUs."""
  preset = presets.get("bp4d")
  col = labels.SYNTH_AUS.index(au)
  ids, aus, poses, scenes, ys, subj = [], [], [], [], [], []
  for s in subjects:
    ident = generate.subject_identity(preset, seed, s)
    for i in range(frames):
      rng = np.random.default_rng([seed, 7, s, i])
      a = np.where(rng.uniform(size=len(labels.SYNTH_AUS)) < 0.15,
                   rng.integers(1, 6, len(labels.SYNTH_AUS)), 0).astype(np.float32)
      a[col] = rng.integers(2, 6) if rng.uniform() < 0.5 else 0
      ids.append(ident)
      aus.append(a)
      poses.append(scene.frontal_pose(1))
      scenes.append(scene.sample_scene(rng, scene.LAB))
      ys.append(a[col] > 0)
      subj.append(s)
  out = scene.render(identity.stack(ids), np.stack(aus), scene.stack(poses), size=size,
                     scene=scene.stack(scenes), identity_bias=identity_bias)
  return _features(out["image"]), np.array(ys), np.array(subj)


def measure(identity_bias: float, au: int = 4, train_subjects: int = 6, test_subjects: int = 12,
            frames: int = 100, held_out: int = 30, size: int = 64, seed: int = 0) -> dict:
  """Balanced accuracy on (held-out frames of training subjects, unseen subjects)."""
  from sklearn.linear_model import LogisticRegression  # pylint: disable=g-import-not-at-top
  from sklearn.metrics import balanced_accuracy_score  # pylint: disable=g-import-not-at-top
  x, y, s = _render(range(train_subjects), frames, au, identity_bias, size, seed)
  frame = np.tile(np.arange(frames), train_subjects)
  train, same = frame < frames - held_out, frame >= frames - held_out
  xu, yu, _ = _render(range(train_subjects, train_subjects + test_subjects), held_out, au,
                      identity_bias, size, seed)
  clf = LogisticRegression(C=0.5, max_iter=3000).fit(x[train], y[train])
  return {"same": balanced_accuracy_score(y[same], clf.predict(x[same])),
          "unseen": balanced_accuracy_score(yu, clf.predict(xu))}


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--au", type=int, default=4)
  p.add_argument("--seed", type=int, default=0)
  a = p.parse_args(argv)
  print(f"AU{a.au} detection, balanced accuracy (logistic regression on 32x32 gray pixels)")
  print(f"{'identity_bias':>14} {'same subjects':>14} {'unseen subjects':>16} {'gap':>6}")
  for bias in (1.0, 0.0):
    r = measure(bias, a.au, seed=a.seed)
    print(f"{bias:>14.1f} {r['same']:>14.3f} {r['unseen']:>16.3f} {r['same'] - r['unseen']:>6.3f}")


if __name__ == "__main__":
  main()
