"""SynthFACS: determinism, shapes, localized AU effects, landmarks, writers, folds, Grain."""

import csv
import os
import pickle

import grain
import numpy as np
import pytest

from norface_jax.data import labels
from norface_jax.data import synthfacs
from norface_jax.data.synthfacs import generate, identity, presets, raster, scene, writer


def test_deterministic_from_seed_subject_index():
  p = presets.get("bp4d")
  a = generate.render_items(p, 3, [0, 5, 5], [2, 7, 1], size=64)
  b = generate.render_items(p, 3, [5], [7], size=64)  # alone, other batch.
  np.testing.assert_array_equal(a["image"][1], b["image"][0])
  np.testing.assert_allclose(a["landmarks"][1], b["landmarks"][0], atol=1e-4)
  c = generate.render_items(p, 4, [5], [7], size=64)
  assert np.abs(a["image"][1].astype(int) - c["image"][0]).mean() > 1


@pytest.mark.parametrize("size", [64, 256])
def test_shapes_and_dtypes(size):
  src = synthfacs.SynthFACSSource("disfa", "test", fold=1, size=size, frames_per_subject=1)
  item = src[0]
  assert item["image"].shape == (size, size, 3) and item["image"].dtype == np.uint8
  assert item["au"].shape == (8,) and item["au"].dtype == np.float32
  assert item["au_intensity"].shape == (12,) and item["au_intensity"].dtype == np.float32
  assert item["landmarks"].shape == (68, 2) and item["landmarks"].dtype == np.float32
  assert item["brows"].shape == (4,)
  for k in ("emotion", "subject", "gender", "skin", "domain", "index"):
    assert item[k].dtype == np.int32 and item[k].shape == ()
  np.testing.assert_array_equal(item["au"], (item["au_intensity"][
      [labels.DISFA_INTENSITY_AUS.index(a) for a in labels.DISFA_DETECTION_AUS]] >= 2))


def test_brows_are_the_expression_channels():
  """`brows` is the brow raise the AUs add to the person's resting face (a 3DMM's
  expression part): 0 for every neutral face whatever its brows and resting
  look-alikes, AU1 at 5 raises the inner brow by 0.15 and the outer by 0.01 (geometry),
  and the identity parts cancel, so two people with the same AUs get the same value."""
  rng = np.random.default_rng(3)
  ids = identity.stack([identity.sample_identity(rng) for _ in range(4)])
  ids["rest_aus"][:] = 0.0
  ids["rest_aus"][:, synthfacs_au_index(4)] = 2.0  # Naturally low brows (AU4 look-alike).
  au = np.zeros((4, 17), np.float32)
  au[2:, synthfacs_au_index(1)] = 5.0
  sc = scene.stack([scene.sample_scene(np.random.default_rng(0), scene.LAB)] * 4)
  brows = scene.render(ids, au, scene=sc, size=64, identity_bias=1.0)["brows"]
  np.testing.assert_allclose(brows[:2], 0.0, atol=1e-6)
  # AU1 on top of a resting AU4 of 2 (fractions add before clipping at 5): +0.15 / +0.01.
  np.testing.assert_allclose(brows[2:], [[0.15, 0.01, 0.15, 0.01]] * 2, atol=1e-5)


def synthfacs_au_index(au: int) -> int:
  return list(labels.SYNTH_AUS).index(au)


# AU -> landmark groups of the region where its effect must mainly lie.
_REGIONS = {1: "brow", 2: "brow", 4: "brow", 5: "eye", 6: "eye", 7: "eye", 9: "nose",
            10: "mouth", 12: "mouth", 14: "mouth", 15: "mouth", 17: "mouth", 20: "mouth",
            23: "mouth", 24: "mouth", 25: "mouth", 26: "mouth"}
_GROUPS = {"brow": range(17, 27), "eye": range(36, 48), "nose": range(27, 36),
           "mouth": range(48, 68)}


def test_each_au_changes_its_region():
  size = 112
  ident = identity.take(identity.sample_identity(np.random.default_rng(1), gender=1, skin=0),
                        [0] * 18)
  au = np.zeros((18, 17), np.float32)
  for i in range(17):
    au[i + 1, i] = 4
  sc = scene.stack([scene.sample_scene(np.random.default_rng(0), scene.LAB)] * 18)
  out = scene.render(ident, au, scene=sc, size=size, identity_bias=0)
  img = out["image"].astype(np.float32)
  lm = out["landmarks"][0]
  yy, xx = np.mgrid[:size, :size] + 0.5
  for i, a in enumerate(labels.SYNTH_AUS):
    diff = np.abs(img[i + 1] - img[0]).sum(-1)
    assert diff.sum() > 500, f"AU{a} changes too little"
    pts = lm[list(_GROUPS[_REGIONS[a]])]
    c, r = pts.mean(0), 0.22 * size
    near = (xx - c[0]) ** 2 + (yy - c[1]) ** 2 < r * r
    assert diff[near].sum() > 0.6 * diff.sum(), f"AU{a} effect not mainly in {_REGIONS[a]}"


def test_landmarks_follow_pose():
  ident = identity.sample_identity(np.random.default_rng(0))
  au = np.zeros((1, 17), np.float32)
  p0 = scene.frontal_pose(1)
  p1 = {"roll": np.float32([0.3]), "yaw": np.float32([0.0]), "scale": np.float32([0.9]),
        "shift": np.float32([[0.05, -0.03]])}
  l0 = scene.render(ident, au, p0, size=128)["landmarks"][0]
  l1 = scene.render(ident, au, p1, size=128)["landmarks"][0]
  M0, t0 = raster.pose_affine(p0, 128)
  M1, t1 = raster.pose_affine(p1, 128)
  expect = (l0 - t0[0]) @ np.linalg.inv(M0[0]).T @ M1[0].T + t1[0]
  np.testing.assert_allclose(l1, expect, atol=1e-3)
  # The pixels agree: a point of the cheek (between jaw and nose) has the same colour.
  colours = []
  for pose, lm in ((p0, l0), (p1, l1)):
    img = scene.render(ident, au, pose, size=128)["image"][0].astype(float)
    x, y = ((lm[3] + lm[31]) / 2).astype(int)
    colours.append(img[y, x])
  np.testing.assert_allclose(colours[0], colours[1], atol=20)
  assert np.abs(colours[0] - ident["skin_rgb"][0] * 255).max() < 60


def _read_csv(path):
  with open(path) as f:
    return list(csv.reader(f))


@pytest.mark.parametrize("like", sorted(presets.PRESETS))
def test_writer_layout(tmp_path, like):
  root = str(tmp_path / like)
  n = writer.write(like, root, subjects=3, frames=2, size=64)
  p = presets.get(like)
  if like.startswith("bp4d"):
    assert n == 3 * 2 * len(p.tasks)
    subj = sorted(d for d in os.listdir(root) if d[0] in "FM")
    assert len(subj) == 3
    assert os.path.exists(os.path.join(root, subj[0], "T1", "0.jpg"))
    rows = _read_csv(os.path.join(root, "AU_OCC", f"{subj[0]}_T1.csv"))
    assert rows[0] == ["frame"] + [str(a) for a in labels.BP4D_DETECTION_AUS]
    assert len(rows) == 3 and all(v in "01" for v in rows[1][1:])
    rows = _read_csv(os.path.join(root, "AU_INT", "AU06", f"{subj[0]}_T1_AU06.csv"))
    assert len(rows) == 2 and 0 <= int(rows[0][1]) <= 5
  elif like == "disfa":
    subj = sorted(d for d in os.listdir(root) if d.startswith("SN"))
    assert len(subj) == 3 and os.path.exists(os.path.join(root, subj[0], "1.png"))
    for a in labels.DISFA_INTENSITY_AUS:
      rows = _read_csv(os.path.join(root, "ActionUnit_Labels", subj[0], f"{subj[0]}_au{a}.txt"))
      assert [r[0] for r in rows] == ["0", "1"] and 0 <= int(rows[1][1]) <= 5
  elif like == "affectnet":
    lists = os.path.join(root, "Manually_Annotated_file_lists")
    total = 0
    for name in ("training.csv", "validation.csv"):
      rows = _read_csv(os.path.join(lists, name))
      assert ",".join(rows[0]) == writer.AFFECTNET_HEADER
      for r in rows[1:]:
        assert len(r) == 9 and len(r[5].split(";")) == 136 and 0 <= int(r[6]) <= 7
        assert os.path.exists(os.path.join(root, "Manually_Annotated_Images", r[0]))
        total += 1
    assert total == 6
  else:
    lines = open(os.path.join(root, "EmoLabel", "list_patition_label.txt")).read().split("\n")
    lines = [l.split() for l in lines if l]
    assert len(lines) == 6 and any(l[0].startswith("test_") for l in lines)
    for name, lab in lines:
      assert 1 <= int(lab) <= 7
      stem = name[:-4]
      from PIL import Image
      assert Image.open(os.path.join(root, "Image", "aligned", f"{stem}_aligned.jpg")).size == (100, 100)
      assert os.path.exists(os.path.join(root, "Image", "original", name))


@pytest.mark.parametrize("like", sorted(presets.PRESETS))
def test_folds_subject_exclusive(like):
  p = presets.get(like)
  info = synthfacs.preset_info(like)
  if like == "bp4d":
    assert len(p.subjects) == 41 and [len(f) for f in info["folds"]] == [14, 14, 13]
  if like == "bp4dplus":
    assert len(p.subjects) == 140 and len(info["folds"]) == 3  # The paper's 3 folds.
  if like == "disfa":
    assert len(p.subjects) == 27
  for fold in range(max(1, len(p.fold_parts))):
    train, test = p.split_subjects("train", fold), p.split_subjects("test", fold)
    assert train and test and not set(train) & set(test)
    assert sorted(train + test) == list(range(len(p.subjects)))


def test_grain_source_batches_and_pickles():
  src = synthfacs.SynthFACSSource("bp4d", "test", fold=2, size=64, frames_per_subject=2)
  assert len(src) == 13 * 2
  assert set(src[0]) == set(synthfacs.SynthFACSSource.KEYS)
  test_names = {src.preset.subjects[int(src[i]["subject"])] for i in range(len(src))}
  assert test_names == set(src.preset.folds[2])
  batch = next(iter(grain.MapDataset.source(src).batch(4)))
  assert batch["image"].shape == (4, 64, 64, 3) and batch["au"].shape == (4, 12)
  clone = pickle.loads(pickle.dumps(src))
  np.testing.assert_array_equal(clone[3]["image"], src[3]["image"])
  lazy = synthfacs.SynthFACSSource("bp4d", "test", fold=2, size=64, frames_per_subject=2,
                                   cache=False)
  np.testing.assert_array_equal(lazy[3]["image"], src[3]["image"])


def test_sibling_source_pairs_other_frames_of_the_same_subject():
  from norface_jax.data import registry
  src = synthfacs.SynthFACSSource("bp4d", "test", fold=2, size=64, frames_per_subject=3)
  ids = src.subject_ids()
  np.testing.assert_array_equal(ids, [int(src[i]["subject"]) for i in range(len(src))])
  sib = registry.SiblingSource(src, ids, seed=1)
  assert sib.alone == 0
  for i in range(len(src)):
    j = int(sib.partner[i])
    assert j != i and ids[j] == ids[i]
    np.testing.assert_array_equal(sib[i]["sibling"], src[j]["image"])
  # Deterministic from the seed; items without a subject or alone are their own sibling.
  np.testing.assert_array_equal(registry.SiblingSource(src, ids, seed=1).partner, sib.partner)
  lone = ids.copy()
  lone[:3] = -1
  lone[3] = 10_000
  other = registry.SiblingSource(src, lone, seed=1)
  assert list(other.partner[:4]) == [0, 1, 2, 3] and other.alone == 4
  np.testing.assert_array_equal(other[0]["sibling"], src[0]["image"])
  with pytest.raises(ValueError, match="subject ids for a source"):
    registry.SiblingSource(src, ids[:-1])
