"""Raw layout -> TFDS prepared data -> Grain source -> the stage-2 trainer, per dataset."""

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from norface_jax.data import prepared, registry
from norface_jax.data.readers import common
from norface_jax.data.synthfacs import writer
from norface_jax.training import stage2

from tests.test_train_stage2 import ROOT, tiny_config

# SynthFACS fixtures: (subjects, frames); 2 subjects per fold part for the AU datasets.
FIXTURES = {"bp4d": (6, 1), "bp4dplus": (8, 1), "disfa": (6, 4), "affectnet": (16, 2),
            "rafdb": (16, 2)}
CONFIGS = {"bp4d": "bp4d_au", "bp4dplus": "bp4dplus_au", "disfa": "disfa_au_intensity",
           "affectnet": "affectnet_fer", "rafdb": "rafdb_fer"}


def write_and_prepare(tmp, dataset, **options):
  subjects, frames = FIXTURES[dataset]
  raw = str(tmp / "raw" / dataset)
  writer.write(dataset, raw, subjects=subjects, frames=frames, size=64)
  opts = prepared.PrepareOptions(image_size=64, **options)
  return raw, prepared.prepare(dataset, raw, str(tmp / "prep"), opts)


@pytest.mark.parametrize("dataset", list(FIXTURES))
def test_prepare_then_train_and_evaluate(tmp_path, dataset):
  _, out = write_and_prepare(tmp_path, dataset)
  meta = json.load(open(os.path.join(out, prepared.META_FILE)))
  assert meta["problems"]["skipped_bad"] == 0
  if dataset in prepared.AU_DATASETS:
    assert os.path.isfile(os.path.join(out, "folds.txt")) and len(meta["folds"]["parts"]) >= 3
  config = tiny_config(CONFIGS[dataset])
  config.data.synthetic = False
  config.data.normalization = "none"
  config.model.streams = ("orig",)
  config.data.data_dir = str(tmp_path / "prep")
  config.input.batch_size = 8
  config.input.eval_batch_size = 8
  config.total_steps = 2
  config.eval_every = 2
  result = stage2.train_and_evaluate(config, str(tmp_path / "w"))
  key = {"au_detection": "f1/mean", "au_intensity": "icc/mean", "fer": "accuracy"}[config.task]
  assert key in result["report"] and np.isfinite(result["report"][key])


def test_source_items_folds_and_classes(tmp_path):
  _, out = write_and_prepare(tmp_path, "bp4d")
  train = prepared.source(str(tmp_path / "prep"), "bp4d", "train", 1, 32)
  test = prepared.source(str(tmp_path / "prep"), "bp4d", "test", 1, 32)
  assert (len(train), len(test)) == (32, 16)
  parts = json.load(open(os.path.join(out, prepared.META_FILE)))["folds"]["parts"]
  subjects = json.load(open(os.path.join(out, prepared.META_FILE)))["subjects"]
  item = pickle.loads(pickle.dumps(test))[3]           # Picklable for Grain workers.
  assert item["image"].shape == (32, 32, 3) and item["image"].dtype == np.uint8
  assert item["au"].shape == (12,) and item["au_intensity"].shape == (5,)
  assert subjects[int(item["subject"])] in parts[1] and item["path"].count("/") == 2
  assert int(item["gender"]) == int(item["path"][0] == "F")
  np.testing.assert_array_equal(test.subject_ids(), [int(test[i]["subject"]) for i in range(len(test))])
  with pytest.raises(ValueError, match="fold=3 outside 0..2"):
    prepared.source(str(tmp_path / "prep"), "bp4d", "test", 3, 32)


def test_affectnet_7_and_8_classes(tmp_path):
  write_and_prepare(tmp_path, "affectnet")
  eight = prepared.source(str(tmp_path / "prep"), "affectnet", "train", 0, 64, num_classes=8)
  seven = prepared.source(str(tmp_path / "prep"), "affectnet", "train", 0, 64, num_classes=7)
  e8 = [int(eight[i]["emotion"]) for i in range(len(eight))]
  assert len(seven) == sum(e < 7 for e in e8)
  assert all(int(seven[i]["emotion"]) < 7 for i in range(len(seven)))


def test_corrupt_jpeg_stops_or_is_skipped(tmp_path):
  subjects, frames = FIXTURES["bp4d"]
  raw = tmp_path / "raw"
  writer.write("bp4d", str(raw), subjects=subjects, frames=frames, size=64)
  subject = sorted(d for d in os.listdir(raw) if d[0] in "FM" and len(d) == 4)[0]
  (raw / subject / "T2" / "0.jpg").write_bytes(b"\xff\xd8\xff garbage")
  opts = prepared.PrepareOptions(image_size=64)
  with pytest.raises(common.BadInputError,
                     match=rf"AU_OCC/{subject}_T2.csv:2: cannot read image .*{subject}/T2/0.jpg"):
    prepared.prepare("bp4d", str(raw), str(tmp_path / "a"), opts)
  opts.skip_bad = True
  out = prepared.prepare("bp4d", str(raw), str(tmp_path / "b"), opts)
  meta = json.load(open(os.path.join(out, prepared.META_FILE)))
  assert meta["problems"]["skipped_bad"] == 1 and sum(meta["splits"].values()) == 47
  assert f"{subject}/T2/0.jpg" in meta["problems"]["bad"][0]


def test_normalized_release_pairs_by_path_and_by_name(tmp_path):
  raw, _ = write_and_prepare(tmp_path, "rafdb")
  src = prepared.source(str(tmp_path / "prep"), "rafdb", "test", 0, 32)
  release = tmp_path / "norface_rafdb"
  for target in ("target1", "target2"):
    for i in range(len(src)):
      rel = src[i]["path"]
      for d, name in ((release / target / os.path.dirname(rel), os.path.basename(rel)),
                      (tmp_path / "flat" / target, os.path.basename(rel))):
        os.makedirs(d, exist_ok=True)
        Image.fromarray(np.full((40, 40, 3), 10 if target == "target1" else 200, np.uint8)).save(d / name)
  assert prepared.normalized_targets(str(release)) == ["target1", "target2"]
  paired = registry.PairedFolderSource(src, prepared.normalized_dir(str(release), "target2"), 32)
  assert paired[0]["image_norm"].shape == (32, 32, 3) and paired[0]["image_norm"].mean() > 150
  by_name = prepared.PairedByName(src, str(tmp_path / "flat"), 32, target="target1")
  assert by_name[len(src) - 1]["image_norm"].mean() < 50
  with pytest.raises(FileNotFoundError, match="target3"):
    prepared.normalized_dir(str(release), "target3")


def test_prepare_data_command(tmp_path):
  raw = str(tmp_path / "raw")
  writer.write("disfa", raw, subjects=3, frames=2, size=64)
  run = subprocess.run(
      [sys.executable, os.path.join(ROOT, "launch", "prepare_data.py"), "--dataset=disfa",
       f"--manual_dir={raw}", f"--data_dir={tmp_path / 'prep'}", "--image_size=32"],
      capture_output=True, text=True, timeout=120, cwd=ROOT)
  assert run.returncode == 0, run.stderr[-2000:]
  out = run.stdout + run.stderr
  assert "Generating part1 examples" in out                          # TFDS progress bar.
  assert "disfa: prepared {'part1': 2, 'part2': 2, 'part3': 2}" in out
  assert os.path.isfile(tmp_path / "prep" / "disfa" / "default" / "1.0.0" / "folds.txt")
