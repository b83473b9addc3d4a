"""DeepFN: all persons' autoencoders in one program == one at a time; the protocol end to end."""

import json
import os

import jax
import ml_collections
import numpy as np
import pytest
import scipy.stats

from norface_jax.data import labels
from norface_jax.deepfn import ae_train
from norface_jax.deepfn import protocol

AE_CFG = dict(widths=(4, 4, 8, 8), latent=8, batch_size=2, lr=1e-3, b1=0.5, b2=0.999,
              warp=dict(rotation_deg=10.0, scale=0.05, shift=0.05, grid=5, noise=0.02))


def test_vmapped_persons_equal_one_at_a_time(tmp_path):
  trainer = ae_train.make_trainer(ml_collections.ConfigDict(AE_CFG))
  rng = np.random.default_rng(0)
  persons = [rng.uniform(size=(n, 32, 32, 1)).astype(np.float32) for n in (6, 4)]
  images_x, n_x = ae_train.stack_person_images(persons, multiple=2)
  images_y = rng.uniform(size=(5, 32, 32, 1)).astype(np.float32)
  mesh = ae_train.person_mesh(jax.sharding.Mesh(np.asarray(jax.devices()[:2]), ("data",)))
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  init = lambda: ae_train.init_persons(trainer, keys[:2], 32, mesh)  # noqa: E731
  states = init()
  single, m_single = ae_train.train_one_at_a_time(
      trainer, jax.device_get(states), images_x, n_x, images_y, keys[2:], 2)
  # One iteration a call: the draws depend on each state's step, not on the split.
  multi, m_multi = ae_train.train_persons(trainer, states, images_x, n_x, images_y, keys[2:], 2,
                                          mesh, steps_per_call=1)
  assert m_multi["loss_x"].shape == (2, 2)
  # Checkpointed, stopped after the first call and resumed: bit-identical.
  run = lambda **kw: ae_train.train(  # noqa: E731
      trainer, init(), images_x, n_x, images_y, keys[2:], 2, mesh, steps_per_call=1,
      control=ae_train.Control(workdir=str(tmp_path), **kw))
  assert run(stop_at=1)[2] == {"start": 0, "done": 1, "stopped": "stop_at", "nonfinite": 0}
  resumed, m_resumed, status = run()
  assert status["start"] == 1 and status["done"] == 2
  for a, b in zip(jax.tree.leaves((multi, m_multi)), jax.tree.leaves((resumed, m_resumed))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  np.testing.assert_allclose(m_multi["loss_x"], m_single["loss_x"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(m_multi["loss_y"], m_single["loss_y"], rtol=1e-5, atol=1e-6)
  for a, b in zip(jax.tree.leaves(multi.params), jax.tree.leaves(single.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
  out = ae_train.normalize_persons(trainer, multi, images_x, mesh, batch=4)
  assert out.shape == images_x.shape


def test_t_test_wiring_matches_scipy():
  a, b = [0.5, 0.6, 0.55, 0.62], [0.4, 0.45, 0.5]
  ref = scipy.stats.ttest_ind(a, b)
  got = protocol.t_test(a, b)
  assert np.isclose(got["t"], ref.statistic) and np.isclose(got["p"], ref.pvalue)
  assert np.isnan(protocol.t_test([0.5], b)["p"])


def test_groups_leave_out_subjects_without_a_group():
  """Unknown gender / skin (-1, e.g. Fitzpatrick III-IV) is no group of its own (it was
  read as names[-1], 'female' / 'darker')."""
  pool = protocol.data_lib.Pool("d", ("AU1",), np.zeros((4, 2, 2, 1), np.uint8),
                                np.zeros((4, 1)), np.arange(4), np.zeros(4, int),
                                np.array([0, 1, -1, 1]), np.zeros(4, int))
  persons = [("d", s) for s in range(4)]
  assert protocol._groups({"d": pool}, persons, "skin") == {0: [("d", 0)],
                                                           1: [("d", 1), ("d", 3)]}


def test_summary_by_hand():
  """Per-AU means and gains, and the scores grouped by the test set's group."""
  def rec(direction, kind, score, au):
    return {"group": "gender", "analysis": "cross" if direction[0] != direction[-1] else "within",
            "input": kind, "direction": direction, "score": score, "per_au": au, "rep": 0,
            "split": 0}
  records = [rec("male→female", "original", 0.6, [0.5, 0.7]),
             rec("female→female", "original", 0.8, [0.7, 0.9]),
             rec("female→male", "original", 0.4, [0.3, 0.5]),
             rec("male→male", "original", 0.2, [0.1, 0.3]),
             rec("male→female", "deepfn", 0.7, [0.6, 0.8]),
             rec("female→female", "deepfn", 0.9, [0.8, 1.0]),
             rec("female→male", "deepfn", 0.5, [0.4, 0.6]),
             rec("male→male", "deepfn", 0.3, [0.2, 0.4])]
  effects = protocol.test_group_effects(records)["gender"]
  assert effects["original"]["female"] == {"mean": pytest.approx(0.7), "n": 2}
  assert effects["original"]["male"] == {"mean": pytest.approx(0.3), "n": 2}
  got = effects["deepfn"]["t-test"]
  ref = scipy.stats.ttest_ind([0.7, 0.9], [0.5, 0.3])
  assert np.isclose(got["t"], ref.statistic) and np.isclose(got["p"], ref.pvalue)
  cross = protocol.per_au([r for r in records if r["analysis"] == "cross"])
  np.testing.assert_allclose(cross["original"], [0.4, 0.6])
  np.testing.assert_allclose(cross["gain"], [0.1, 0.1])


def test_protocol_end_to_end_on_prepared_bp4d_and_a_folder_dataset(tmp_path):
  """As a user with BP4D and their own AU-labelled photos runs it: BP4D in its raw layout
  (here written by SynthFACS, with the `subjects.csv` of genders and Fitzpatrick types)
  and a folder dataset (a manifest of DISFA-preset SynthFACS photos with AU, gender and
  skin columns), both prepared with launch/prepare_data.py's code; the protocol reads
  them from `data_dir`, the folder dataset as `folder:<manifest name>`."""
  from PIL import Image
  from norface_jax.configlib import load_config
  from norface_jax.data import prepared
  from norface_jax.data.synthfacs import writer
  from norface_jax.data.synthfacs.source import SynthFACSSource
  raw = str(tmp_path / "raw" / "bp4d")
  writer.write("bp4d", raw, subjects=16, frames=1, size=64)
  prepared.prepare("bp4d", raw, str(tmp_path / "prep"), prepared.PrepareOptions(image_size=64))
  photos = tmp_path / "photos"
  os.makedirs(photos)
  src = SynthFACSSource("disfa", "train", size=64, frames_per_subject=8, subjects=[0, 1, 2])
  aus = [f"AU{a}" for a in labels.DISFA_DETECTION_AUS]
  lines = ["path,subject,gender,skin," + ",".join(aus)]
  for i in range(len(src)):
    item = src[i]
    Image.fromarray(item["image"]).save(photos / f"{i}.png")
    fitz = {0: 2, 1: 5}.get(int(item["skin"]), 3)
    lines.append(f"{i}.png,P{int(item['subject'])},{'fm'[int(item['gender']) == 0]},{fitz},"
                 + ",".join(str(int(v)) for v in item["au"]))
  (photos / "disfa_photos.csv").write_text("\n".join(lines) + "\n")
  prepared.prepare("folder", "", str(tmp_path / "prep"), prepared.PrepareOptions(
      image_size=64, manifest=str(photos / "disfa_photos.csv")))
  c = load_config(f"configs/deepfn_bp4d.py:tiny,data_dir={tmp_path / 'prep'}")
  assert not c.data.synthetic
  c.data.cross_dataset = "folder:disfa_photos"
  # Smaller than `tiny`: 1 train / 1 validation subject, 32x32 inputs, 8 frames (one per
  # BP4D task: the within-person split's segments come from the task folders).
  c.data.frames_per_subject = 8
  c.data.max_subjects = {"bp4d": 9, "folder:disfa_photos": 3}
  c.preprocess.ae_size = c.preprocess.lenet_size = 32
  c.ae.update(widths=(4, 4, 8, 8), latent=8, batch_size=4)
  c.protocol.n_train = c.protocol.n_val = 1
  work = tmp_path / "work"
  out = protocol.run(c, str(work))
  assert out["info"]["subjects"] == {"bp4d": 8, "folder:disfa_photos": 3}  # 9 - template.
  for name in ("deepfn_table.md", "deepfn_protocol.png", "deepfn_examples.png", "records.json",
               "deepfn_per_au.png"):
    assert os.path.getsize(work / name) > 0
  table = (work / "deepfn_table.md").read_text()
  for row in protocol.ROWS.values():
    assert f"| {row} |" in table
  # The paper's counts: one split per person (person-dependent), 2 draws (person-
  # independent), one per direction (the group rows), per repetition.
  rows = out["summary"]["rows"]
  assert rows["Person-dependent"]["splits_per_rep"] == c.protocol.person_dependent_persons
  assert rows["Person-independent"]["splits_per_rep"] == 2
  assert rows["Gender-independent"]["splits_per_rep"] == 2 and "| 1x2 |" in table
  assert len(rows["Person-independent"]["per_au"]["gain"]) == 12
  assert "female vs male test sets" in json.dumps(out["summary"]["test_groups"])
  # The t-tests in the report are scipy's on the recorded per-subject scores.
  recs = json.loads((work / "records.json").read_text())["records"]
  w = [r["score"] for r in recs if r["group"] == "gender" and r["analysis"] == "within"
       and r["input"] == "original"]
  x = [r["score"] for r in recs if r["group"] == "gender" and r["analysis"] == "cross"
       and r["input"] == "original"]
  got = out["summary"]["tests"]["gender"]["gap original (within vs cross)"]
  assert np.isclose(got["p"], scipy.stats.ttest_ind(w, x).pvalue, equal_nan=True)
