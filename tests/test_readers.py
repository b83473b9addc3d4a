"""Readers of the raw layouts (FORMATS.md) on SynthFACS-written fixtures; bad input."""

import os

import numpy as np
import pytest

from norface_jax.data import labels, readers
from norface_jax.data.readers import bp4d, common, disfa
from norface_jax.data.synthfacs import writer


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
  root = tmp_path_factory.mktemp("raw")
  for name, subjects, frames in (("bp4d", 3, 1), ("disfa", 3, 3), ("affectnet", 6, 2),
                                 ("rafdb", 6, 2), ("bp4dplus", 4, 1)):
    writer.write(name, str(root / name), subjects=subjects, frames=frames, size=64)
  return root


def copy(src, dst):
  import shutil
  shutil.copytree(src, dst)
  return str(dst)


def test_bp4d_folds_labels_and_paths(raw):
  recs = readers.read("bp4d", str(raw / "bp4d"), common.Problems())
  assert list(recs.splits) == ["part1", "part2", "part3"]
  assert [len(v) for v in recs.splits.values()] == [8, 8, 8]      # 1 subject x 8 tasks each.
  ex = recs.splits["part1"][0]
  assert ex.subject in bp4d.BP4D_FOLDS[0].split()
  assert ex.path == f"{ex.subject}/{ex.session}/{ex.frame}.jpg" and os.path.isfile(ex.image_path)
  assert ex.au.shape == (12,) and set(np.unique(ex.au)) <= {0.0, 1.0}
  assert ex.au_intensity.shape == (5,) and recs.info["has_intensity"]
  assert recs.attributes[ex.subject]["gender"] == int(ex.subject[0] == "F")


def test_bp4d_unknown_labels_dropped_and_counted(raw, tmp_path):
  root = copy(raw / "bp4d", tmp_path / "b")
  occ = os.path.join(root, "AU_OCC", sorted(os.listdir(os.path.join(root, "AU_OCC")))[0])
  lines = open(occ).read().splitlines()
  lines[1] = lines[1].rsplit(",", 1)[0] + ",9"
  open(occ, "w").write("\n".join(lines) + "\n")
  problems = common.Problems()
  recs = readers.read("bp4d", root, problems)
  assert len(recs) == 23 and problems.dropped == {"AU occurrence unknown (9)": 1}
  assert "dropped 1" in problems.summary()


def test_bp4d_list_files(raw, tmp_path):
  recs = readers.read("bp4d", str(raw / "bp4d"), common.Problems())
  exs = [e for part in recs.splits.values() for e in part]
  (tmp_path / "list.txt").write_text("".join(e.path + "\n" for e in exs))
  (tmp_path / "labels.txt").write_text("".join(" ".join(str(int(v)) for v in e.au) + "\n" for e in exs))
  lst = readers.read("bp4d", str(raw / "bp4d"), common.Problems(), list_file=str(tmp_path / "list.txt"),
                     label_file=str(tmp_path / "labels.txt"))
  got = {e.path: e.au for part in lst.splits.values() for e in part}
  assert len(got) == 24
  for e in exs:
    np.testing.assert_array_equal(got[e.path], e.au)
  # A label row with the wrong column count names the file and line.
  rows = (tmp_path / "labels.txt").read_text().splitlines()
  rows[4] = rows[4] + " 1"
  (tmp_path / "labels.txt").write_text("\n".join(rows) + "\n")
  with pytest.raises(common.BadInputError, match=r"labels.txt:5: 13 columns, expected 12"):
    readers.read("bp4d", str(raw / "bp4d"), common.Problems(), list_file=str(tmp_path / "list.txt"),
                 label_file=str(tmp_path / "labels.txt"))


def test_bp4dplus_seeded_folds(raw):
  a = readers.read("bp4dplus", str(raw / "bp4dplus"), common.Problems(), fold_seed=3)
  b = readers.read("bp4dplus", str(raw / "bp4dplus"), common.Problems(), fold_seed=3)
  assert a.folds.parts == b.folds.parts and len(a.folds.parts) == 3  # The paper's 3 folds.
  assert sorted(s for p in a.folds.parts for s in p) == sorted({e.subject for p in a.splits.values() for e in p})


def test_disfa_occurrence_is_intensity_at_least_2(raw):
  recs = readers.read("disfa", str(raw / "disfa"), common.Problems())
  assert [len(v) for v in recs.splits.values()] == [3, 3, 3]
  for ex in recs.splits["part2"]:
    assert ex.au_intensity.shape == (12,) and ex.au.shape == (8,)
    cols = [labels.DISFA_INTENSITY_AUS.index(a) for a in labels.DISFA_DETECTION_AUS]
    np.testing.assert_array_equal(ex.au, ex.au_intensity[cols] >= 2)
  # AUs 1 2 4 5 6 9 12 15 17 20 25 26 -> detection AUs 1 2 4 6 9 12 25 26 = [0 1 2 3 2 1 4 1].
  np.testing.assert_array_equal(disfa.occurrence(np.array([0, 1, 2, 5, 3, 2, 1, 0, 0, 0, 4, 1.0])),
                                [0, 0, 1, 1, 1, 0, 1, 0])


def test_disfa_missing_frame_names_label_file_and_line(raw, tmp_path):
  root = copy(raw / "disfa", tmp_path / "d")
  subject = sorted(os.listdir(os.path.join(root, "ActionUnit_Labels")))[0]
  os.remove(os.path.join(root, subject, "1.png"))
  with pytest.raises(common.BadInputError,
                     match=rf"{subject}_au1.txt:2: missing frame: no image {subject}/1.png"):
    readers.read("disfa", root, common.Problems())
  problems = common.Problems(skip_bad=True)
  recs = readers.read("disfa", root, problems)
  assert len(recs) == 8 and len(problems.bad) == 1 and "skipped 1 bad" in problems.summary()


def test_affectnet_classes_box_landmarks(raw):
  recs = readers.read("affectnet", str(raw / "affectnet"), common.Problems())
  assert len(recs.splits["train"]) + len(recs.splits["test"]) == 12
  ex = recs.splits["train"][0]
  assert ex.path.startswith("Manually_Annotated_Images/") and os.path.isfile(ex.image_path)
  assert len(ex.box) == 4 and ex.landmarks.shape == (68, 2)
  assert 0 <= ex.emotion < 8


def test_affectnet_non_emotions_dropped_and_bad_row(raw, tmp_path):
  root = copy(raw / "affectnet", tmp_path / "a")
  path = os.path.join(root, "Manually_Annotated_file_lists", "training.csv")
  lines = open(path).read().splitlines()
  first = lines[1].split(",")
  first[6] = "9"                                         # Uncertain: dropped, counted.
  lines[1] = ",".join(first)
  lines.append("0/x.jpg,1,2,3")                         # 4 columns of 9.
  open(path, "w").write("\n".join(lines) + "\n")
  with pytest.raises(common.BadInputError, match=rf"training.csv:{len(lines)}: 4 columns, expected 9"):
    readers.read("affectnet", root, common.Problems())
  problems = common.Problems(skip_bad=True)
  recs = readers.read("affectnet", root, problems)
  assert len(recs) == 11 and len(problems.bad) == 1
  assert problems.dropped == {"AffectNet expression 9 (uncertain)": 1}


def test_affectnet_newer_layout(tmp_path):
  from PIL import Image
  for split, n in (("train_set", 3), ("val_set", 2)):
    os.makedirs(tmp_path / split / "images")
    os.makedirs(tmp_path / split / "annotations")
    for i in range(n):
      Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / split / "images" / f"{i}.jpg")
      np.save(tmp_path / split / "annotations" / f"{i}_exp.npy", np.array(str(i + 5)))
  problems = common.Problems()
  recs = readers.read("affectnet", str(tmp_path), problems)
  assert [e.emotion for e in recs.splits["train"]] == [5, 6, 7]
  assert recs.info["layout"] == "release2" and recs.splits["test"][0].path == "val_set/images/0.jpg"


def test_rafdb_canonical_labels_and_variants(raw):
  aligned = readers.read("rafdb", str(raw / "rafdb"), common.Problems())
  original = readers.read("rafdb", str(raw / "rafdb"), common.Problems(), variant="original")
  a, o = aligned.splits["train"][0], original.splits["train"][0]
  assert a.path.startswith("Image/aligned/train_") and a.path.endswith("_aligned.jpg")
  assert o.path.startswith("Image/original/train_") and os.path.isfile(o.image_path)
  code = {l.split()[0]: int(l.split()[1]) for l in open(raw / "rafdb" / "EmoLabel" / "list_patition_label.txt")}
  assert a.emotion == labels.rafdb_to_canonical(code[os.path.basename(o.path)])
  # RAF-DB 4 = happiness, AffectNet 1 = happiness: one canonical id.
  assert labels.rafdb_to_canonical(4) == labels.affectnet_to_canonical(1) == 1


def test_rafdb_empty_split(raw, tmp_path):
  root = copy(raw / "rafdb", tmp_path / "r")
  path = os.path.join(root, "EmoLabel", "list_patition_label.txt")
  keep = [l for l in open(path) if l.startswith("train_")]
  open(path, "w").writelines(keep)
  with pytest.raises(common.BadInputError, match=r"list_patition_label.txt: empty split 'test'"):
    readers.read("rafdb", root, common.Problems())


def test_unknown_subject_in_fold_list(raw, tmp_path):
  recs = readers.read("bp4d", str(raw / "bp4d"), common.Problems())
  parts = [sorted({e.subject for e in v}) for v in recs.splits.values()]
  fold_file = tmp_path / "folds.txt"
  fold_file.write_text(f"# parts\n{parts[0][0]}\n{parts[1][0]} X999\n{parts[2][0]}\n")
  with pytest.raises(common.BadInputError, match=r"folds.txt:3: unknown subject 'X999'"):
    readers.read("bp4d", str(raw / "bp4d"), common.Problems(), fold_file=str(fold_file))
  problems = common.Problems(skip_bad=True)
  recs = readers.read("bp4d", str(raw / "bp4d"), problems, fold_file=str(fold_file))
  assert len(recs) == 24 and len(problems.bad) == 1
  # A part none of whose subjects has data is an empty split.
  fold_file.write_text(f"{parts[0][0]} {parts[1][0]}\n{parts[2][0]}\nF002\n")
  with pytest.raises(common.BadInputError, match=r"folds.txt:3: empty split"):
    readers.read("bp4d", str(raw / "bp4d"), common.Problems(), fold_file=str(fold_file))


def test_subjects_file_fitzpatrick_types_group_as_the_paper(raw, tmp_path):
  """I-II lighter (0), V-VI darker (1), III-IV and out-of-range in no group (-1); the
  SynthFACS writer's file gives each subject its rendered gender and skin group."""
  assert [common.skin_group(f) for f in range(0, 8)] == [-1, 0, 0, -1, -1, 1, 1, -1]
  recs = readers.read("bp4d", str(raw / "bp4d"), common.Problems())
  written = (raw / "bp4d" / "subjects.csv").read_text().splitlines()
  assert written[0] == "subject,gender,fitzpatrick" and len(written) == 4
  for row in written[1:]:
    subject, gender, fitz = row.split(",")
    assert recs.attributes[subject] == {"gender": int(gender), "skin": {"2": 0, "5": 1}[fitz]}
  path = tmp_path / "subjects.csv"
  path.write_text("subject,gender,fitzpatrick\nF001,1,3\nM001,0,6\nF002,1,-1\n")
  got = common.read_attributes(str(path), common.Problems())
  assert got == {"F001": {"gender": 1, "skin": -1}, "M001": {"gender": 0, "skin": 1},
                 "F002": {"gender": 1, "skin": -1}}
