"""Deterministic SynthFACS items: everything follows from (seed, preset, subject, index).

The identity depends only on (seed, preset, subject); a frame's emotion, AUs, pose and
scene only on (seed, preset, subject, index), so any item can be rendered alone or in
any batch and come out the same.
"""

from __future__ import annotations

import numpy as np

from norface_jax.data import labels
from norface_jax.data.synthfacs import expression
from norface_jax.data.synthfacs import identity as identity_lib
from norface_jax.data.synthfacs import presets as presets_lib
from norface_jax.data.synthfacs import scene


def subject_identity(preset: presets_lib.Preset, seed: int, subject: int) -> dict[str, np.ndarray]:
  """Identity of a preset subject (leading axis 1)."""
  rng = np.random.default_rng([seed, preset.salt, 0, subject])
  return identity_lib.sample_identity(rng, gender=preset.gender(subject))


def frame_params(preset: presets_lib.Preset, seed: int, subject: int, index: int) -> dict:
  """Emotion, AU intensities, asymmetry, pose and scene of one frame."""
  rng = np.random.default_rng([seed, preset.salt, 1, subject, index])
  task = preset.task_of(index)
  emotion = int(rng.choice(len(labels.EMOTIONS), p=preset.emotion_weights(task)))
  au, asym = expression.sample_expression(rng, emotion)
  return {"emotion": emotion, "au": au, "asym": asym, "task": task,
          "pose": scene.sample_pose(rng, preset.domain),
          "scene": scene.sample_scene(rng, preset.domain)}


def render_items(preset: presets_lib.Preset, seed: int, subjects, indices, size: int = 112,
                 identity_bias: float = 1.0, frontal: bool = False) -> dict[str, np.ndarray]:
  """Renders items (subject[i], index[i]) into the item dict of the Grain source.

  frontal=True renders the same frames upright and centred (e.g. RAF-DB aligned).
  """
  subjects, indices = np.asarray(subjects, int), np.asarray(indices, int)
  ids = {s: subject_identity(preset, seed, s) for s in np.unique(subjects)}
  ident = identity_lib.stack([ids[s] for s in subjects])
  frames = [frame_params(preset, seed, s, i) for s, i in zip(subjects, indices)]
  pose = scene.stack([f["pose"] for f in frames])
  if frontal:
    pose = scene.frontal_pose(len(frames))
  au = np.stack([f["au"] for f in frames])
  out = scene.render(ident, au, pose, size=size, asym=np.float32([f["asym"] for f in frames]),
                     scene=scene.stack([f["scene"] for f in frames]),
                     identity_bias=identity_bias)
  det = labels.au_columns(preset.detection_aus)
  inten = labels.au_columns(preset.intensity_aus)
  return {
      "image": out["image"],
      "au": expression.occurrence(au[:, det], preset.occurrence_threshold),
      "au_intensity": au[:, inten].astype(np.float32),
      "au_all": au.astype(np.float32),
      "emotion": np.int32([f["emotion"] for f in frames]),
      "subject": subjects.astype(np.int32),
      "gender": ident["gender"].astype(np.int32),
      "skin": ident["skin"].astype(np.int32),
      "domain": np.full(len(frames), preset.domain, np.int32),
      "landmarks": out["landmarks"],
      "brows": out["brows"],
      "task": np.int32([f["task"] for f in frames]),
      "asym": np.float32([f["asym"] for f in frames]),
      "index": indices.astype(np.int32),
  }


def render_normalized(preset: presets_lib.Preset, seed: int, target: int, au_all: np.ndarray,
                      asym: np.ndarray, size: int = 112,
                      identity_bias: float = 1.0) -> dict[str, np.ndarray]:
  """The ideal identity-normalized faces: `au_all` (B, 17) on the target subject.

  What a perfect stage 1 would output for Norface's I_n: the target's identity, a fixed
  frontal pose and one fixed plain background, and each item's own expression
  (AU intensities and asymmetry).
  """
  n = len(au_all)
  ident = identity_lib.stack([subject_identity(preset, seed, target)] * n)
  one_scene = scene.sample_scene(np.random.default_rng([seed, preset.salt, 2, target]), scene.LAB)
  return scene.render(ident, au_all, scene.frontal_pose(n), size=size,
                      asym=np.asarray(asym, np.float32),
                      scene=scene.stack([one_scene] * n), identity_bias=identity_bias)
