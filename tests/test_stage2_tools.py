"""Evaluation, cross-validation, cross-dataset, predict, init_from, missing data."""

import csv
import json
import os

import jax
import numpy as np
import pytest
from PIL import Image

from norface_jax.data import registry
from norface_jax.data.synthfacs.source import SynthFACSSource
from norface_jax.training import checkpointing, stage2
from norface_jax.inference import evaluate, predict

from tests.test_train_stage2 import tiny_config


def test_missing_real_dataset_says_where_and_how(tmp_path):
  config = tiny_config()
  config.data.synthetic = False
  config.data.normalization = "none"
  config.model.streams = ("orig",)
  config.data.data_dir = str(tmp_path / "tfds")
  with pytest.raises(registry.DataNotFoundError) as e:
    stage2.train_and_evaluate(config, str(tmp_path / "w"))
  msg = str(e.value)
  assert str(tmp_path / "tfds" / "affectnet") in msg
  assert "launch/prepare_data.py --dataset=affectnet" in msg and "synthetic" in msg


def test_fer_evaluate_and_predict(tmp_path):
  config = tiny_config()
  config.total_steps = 2
  config.eval_every = 2
  workdir = str(tmp_path / "w")
  stage2.train_and_evaluate(config, workdir)
  report = evaluate.evaluate_workdir(workdir)
  saved = json.load(open(os.path.join(workdir, "eval.json")))
  assert saved["accuracy"] == pytest.approx(report["accuracy"])
  assert np.asarray(saved["confusion_matrix"]).shape == (7, 7)
  assert os.path.exists(os.path.join(workdir, "confusion.png"))

  # A folder of face crops with their normalized faces at the same relative paths.
  src = SynthFACSSource("affectnet", "test", size=64, num_identities=48, num_classes=7,
                        normalized_target=0)
  images, normalized = tmp_path / "faces", tmp_path / "norm"
  for i in range(5):
    for root, key in ((images, "image"), (normalized, "image_norm")):
      os.makedirs(root / "a", exist_ok=True)
      Image.fromarray(src[i][key]).save(root / "a" / f"{i}.png")
  out = str(tmp_path / "preds.csv")
  with pytest.raises(ValueError, match="--normalized"):
    predict.predict_folder(workdir, str(images), out)
  assert predict.predict_folder(workdir, str(images), out, normalized=str(normalized),
                                batch_size=8) == 5
  rows = list(csv.reader(open(out)))
  assert rows[0][0] == "path" and rows[0][-1] == "prediction" and len(rows) == 6
  probs = np.array([[float(v) for v in r[1:-1]] for r in rows[1:]])
  np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)

  # A corrupt image: named in the error, or skipped and counted.
  (images / "a" / "bad.png").write_bytes(b"not a png")
  (normalized / "a" / "bad.png").write_bytes(b"not a png")
  with pytest.raises(ValueError, match="bad.png"):
    predict.predict_folder(workdir, str(images), out, normalized=str(normalized))
  assert predict.predict_folder(workdir, str(images), out, normalized=str(normalized),
                                skip_bad=True) == 5


def test_cross_validation_and_cross_dataset(tmp_path):
  config = tiny_config("bp4d_au")
  config.model.streams = ("orig",)          # The paper's "w/o Idn" ablation ...
  config.data.normalization = "none"
  config.model.num_experts = 2              # ... with m = 2, k = 1.
  config.model.top_k = 1
  config.total_steps = 2
  config.eval_every = 2
  mean = evaluate.cross_validate(config, str(tmp_path), folds=(0, 1))
  cv = json.load(open(tmp_path / "cv.json"))
  assert mean["f1/mean"] == pytest.approx(np.mean([f["f1/mean"] for f in cv["per_fold"]]))
  # Train BP4D, test DISFA: evaluated on the AUs both share.
  report = evaluate.evaluate_workdir(str(tmp_path / "fold0"), test_dataset="disfa")
  assert {k for k in report if k.startswith("f1/AU")} == {
      "f1/AU1", "f1/AU2", "f1/AU4", "f1/AU6", "f1/AU12"}
  assert os.path.exists(tmp_path / "fold0" / "per_au_disfa.png")


def test_init_from_copies_the_encoder(tmp_path):
  config = tiny_config()
  config.total_steps = 2
  config.eval_every = 2
  first = stage2.train_and_evaluate(config, str(tmp_path / "a"))
  setup = stage2.build(config, 1)
  fresh = jax.jit(lambda r: __import__("flax").linen.unbox(setup.init_fn(r)),
                  out_shardings=setup.state_shardings)(setup.init_rng)
  loaded = fresh.replace(params=checkpointing.graft_params(
      fresh.params, str(tmp_path / "a" / "checkpoints"), "encoder"))
  want = jax.device_get(first["state"].params["encoder"])
  got = jax.device_get(loaded.params["encoder"])
  jax.tree.map(np.testing.assert_array_equal, want, got)
  # The head is not touched.
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(fresh.params["head"]),
               jax.device_get(loaded.params["head"]))
  with pytest.raises(KeyError, match="nope"):
    checkpointing.graft_params(fresh.params, str(tmp_path / "a" / "checkpoints"), "nope")
