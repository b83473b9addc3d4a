"""The validation split that model selection uses: held-out training subjects."""

import numpy as np
import pytest

from norface_jax.data import registry
from norface_jax.training import stage2, stage2_config


def test_holdout_is_subject_exclusive_seeded_and_sized():
  ids = np.repeat(np.arange(20), 3)  # 20 subjects x 3 frames.
  parts = registry.holdout_indices(ids, 0.15, seed=0)
  val_subjects = set(ids[parts["val"]])
  assert len(val_subjects) == 3  # round(0.15 * 20)
  assert not val_subjects & set(ids[parts["train"]])
  assert sorted(np.concatenate([parts["train"], parts["val"]])) == list(range(60))
  again = registry.holdout_indices(ids, 0.15, seed=0)
  assert all(np.array_equal(parts[k], again[k]) for k in parts)
  other = registry.holdout_indices(ids, 0.15, seed=1)
  assert set(ids[other["val"]]) != val_subjects
  # At least one subject, and never all of them.
  assert len(set(ids[registry.holdout_indices(ids[:6], 0.01, 0)["val"]])) == 1
  assert len(set(ids[registry.holdout_indices(ids[:6], 0.99, 0)["train"]])) == 1


def test_holdout_without_subjects_splits_items_and_refuses_one_subject():
  parts = registry.holdout_indices(np.full(40, -1), 0.25, seed=0)
  assert len(parts["val"]) == 10 and len(parts["train"]) == 30
  with pytest.raises(ValueError, match="leaves no validation item"):
    registry.holdout_indices(np.full(3, -1), 0.1, seed=0)
  with pytest.raises(ValueError, match="too few"):
    registry.holdout_indices(np.zeros(5, int), 0.2, seed=0)
  with pytest.raises(ValueError, match="val_share"):
    registry.holdout_indices(np.arange(5), 1.0, seed=0)


def _data(**kw):
  c = stage2_config.task_config("synthetic,runlocal", task="au_detection", dataset="bp4d")
  c.data.frames_per_subject = 2
  c.data.normalization = "none"
  c.data.update(kw)
  return c


def test_val_split_is_held_out_of_train_on_synthfacs():
  c = _data()
  train = registry.make_source(c.data, "train", task="au_detection")
  val = registry.make_source(c.data, "val", task="au_detection")
  everything = registry.make_source(_data(val_share=0.0).data, "train", task="au_detection")
  t, v = registry.subject_ids(train), registry.subject_ids(val)
  assert len(t) + len(v) == len(everything)
  assert set(v) and not set(v) & set(t)
  assert len(set(v)) == round(0.15 * len(set(registry.subject_ids(everything))))
  # Items keep their position in the training split (the paired folders' paths use it).
  assert set(int(val[i]["index"]) for i in range(len(val))) == set(val.indices.tolist())
  with pytest.raises(ValueError, match="val_share > 0"):
    registry.make_source(_data(val_share=0.0).data, "val", task="au_detection")


def test_selection_settings_are_checked_before_any_work():
  c = _data(val_share=0.0)
  with pytest.raises(ValueError, match="val_share > 0"):
    stage2.check_selection(c)
  c = _data()
  c.eval.select = "test"
  with pytest.raises(ValueError, match="select='test'"):
    stage2.check_selection(c)
  c = stage2_config.task_config("synthetic,runlocal,select=last", task="fer", dataset="affectnet")
  assert c.eval.select == "last" and c.data.val_share == 0.0 and stage2.check_selection(c) == "last"


def test_cross_dataset_trains_on_the_whole_source_and_tests_the_whole_target():
  c = _data(test_dataset="disfa", test_preset="disfa")
  train = registry.make_source(c.data, "train", task="au_detection")
  val = registry.make_source(c.data, "val", task="au_detection")
  test = registry.make_source(c.data, "test", task="au_detection")
  from norface_jax.data.synthfacs import presets
  n_source = len(presets.get("bp4d").subjects)
  assert len(set(registry.subject_ids(train)) | set(registry.subject_ids(val))) == n_source
  assert test.source.split == "all" and len(set(registry.subject_ids(test))) == len(
      presets.get("disfa").subjects)
  # The AUs both datasets label, in the test dataset's columns.
  assert test[0]["au"].shape == (len(registry.eval_columns(c.data, "au_detection")[0]),)
