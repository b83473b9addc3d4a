"""A folder dataset: manifest CSV -> prepared faces (real uncropped photos aligned on the
face MTCNN finds, or boxes given) -> leave-one-subject-out cross-validation; bad rows
reported by file and line."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from norface_jax.data import labels, prepared, registry
from norface_jax.data.readers import common, folder
from norface_jax.data.synthfacs.source import SynthFACSSource
from norface_jax.inference import evaluate
from tests.test_train_stage2 import tiny_config

skimage_data = pytest.importorskip("skimage.data", reason="scikit-image ships the test photo")


def real_photos():
  """Two real people: scikit-image's astronaut and matplotlib's Grace Hopper portrait."""
  import matplotlib.cbook
  hopper = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
  return {"eileen": skimage_data.astronaut(), "grace": np.asarray(Image.open(hopper).convert("RGB"))}


def variants(image):
  """Four uncropped photos of one face: as is, mirrored, zoomed out on grey, darker."""
  h, w = image.shape[:2]
  small = np.asarray(Image.fromarray(image).resize((w * 2 // 3, h * 2 // 3)))
  padded = np.full((h, w, 3), 90, np.uint8)
  padded[h // 6:h // 6 + small.shape[0], w // 6:w // 6 + small.shape[1]] = small
  return [image, image[:, ::-1], padded, (image * 0.7).astype(np.uint8)]


def write_study(root):
  """Real photos of 2 people (4 uncropped photos each: MTCNN finds and aligns the face),
  2 SynthFACS subjects x 3 faces pasted into larger pictures with their boxes in the
  manifest, and three bad rows (lines 15-17)."""
  os.makedirs(root / "img")
  lines = ["path,subject,emotion,gender,x,y,w,h"]
  for person, photo in real_photos().items():
    for k, image in enumerate(variants(photo)):
      Image.fromarray(image).save(root / "img" / f"{person}_{k}.jpg")
      lines.append(f"img/{person}_{k}.jpg,{person},{labels.EMOTIONS[k]},f,,,,")
  src = SynthFACSSource("affectnet", "test", size=64, num_identities=48, num_classes=7)
  count = {}
  for i in range(len(src)):
    item = src[i]
    s = int(item["subject"])
    if count.get(s, 0) == 3 or (len(count) == 2 and s not in count):
      continue
    count[s] = count.get(s, 0) + 1
    canvas = np.full((96, 128, 3), 40, np.uint8)
    canvas[16:80, 32:96] = item["image"]
    name = f"img/s{s}_{count[s]}.png"
    Image.fromarray(canvas).save(root / name)
    gender = "female" if int(item["gender"]) == 1 else "male"
    lines.append(f"{name},S{s},{labels.EMOTIONS[int(item['emotion'])]},{gender},32,16,64,64")
  lines += ["img/missing.png,S1,Neutral,m,32,16,64,64",      # line 16
            "img/eileen_0.jpg,eileen,joyful,f,,,,",          # line 17
            "img/grey.png,grey,Neutral,m,,,,"]               # line 18: no face in it
  Image.fromarray(np.full((120, 160, 3), 128, np.uint8)).save(root / "img" / "grey.png")
  (root / "study.csv").write_text("\n".join(lines) + "\n")
  return root / "study.csv"


def test_manifest_header_decides_the_label_kind(tmp_path):
  spec = folder.label_columns(["path", "subject", "AU1", "AU12_c", "AU12_r", "AU6_r"])
  assert spec["kind"] == "au" and spec["aus"] == (1, 6, 12) and spec["intensity_aus"] == (6, 12)
  with pytest.raises(common.BadInputError, match="one kind of label"):
    folder.label_columns(["path", "subject", "emotion", "AU1"], "m.csv")
  with pytest.raises(common.BadInputError, match="m.csv:1: .*'subject'"):
    folder.label_columns(["path", "emotion"], "m.csv")
  # AU rows: occurrence from _c (or plain) columns, else intensity >= 2.
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
  (tmp_path / "m.csv").write_text("path,subject,AU1,AU6_r,AU12_r,AU12_c\n"
                                  "a.png,p1,1,3,1,0\na.png,p2,0,1,4,1\na.png,p2,2,0,0,0\n")
  problems = common.Problems(skip_bad=True)
  records = folder.read(str(tmp_path), problems, manifest=str(tmp_path / "m.csv"))
  exs = [ex for part in records.splits.values() for ex in part]
  np.testing.assert_array_equal([ex.au for ex in exs], [[1, 1, 0], [0, 0, 1]])
  np.testing.assert_array_equal([ex.au_intensity for ex in exs], [[3, 1], [1, 4]])
  assert [str(e) for e in problems.bad] == [f"{tmp_path / 'm.csv'}:4: AU occurrence must be "
                                            "0 or 1 and intensity 0..5"]
  assert records.folds.parts == [["p1"], ["p2"]]  # Leave-one-subject-out.


def test_prepare_then_leave_one_subject_out(tmp_path):
  from norface_jax.detection import crops
  manifest = write_study(tmp_path / "study")
  data_dir = str(tmp_path / "tfds")
  finder = crops.FaceFinder(max_faces=1)
  options = prepared.PrepareOptions(image_size=64, manifest=str(manifest))
  with pytest.raises(common.BadInputError, match=r"study.csv:16: image .*missing.png not found"):
    prepared.prepare("folder", "", data_dir, options, face_finder=finder)
  options.skip_bad = True
  out = prepared.prepare("folder", "", data_dir, options, face_finder=finder)
  assert out.endswith(os.path.join("folder", "study", "1.0.0"))
  meta = json.load(open(os.path.join(out, prepared.META_FILE)))
  bad = meta["problems"]["bad"]
  assert len(bad) == 3 and ":16: " in bad[0] and "joyful" in bad[1] and "no face found" in bad[2]
  assert meta["info"]["labels"] == "emotion" and len(meta["folds"]["parts"]) == 4
  assert sum(meta["splits"].values()) == 14
  # The real photos were aligned on their faces: the same person's four photos give
  # nearly the same crop (mirrored, zoomed out and darkened alike), and not the other's.
  source = prepared.PreparedSource(out, sorted(meta["splits"]), 64)
  crops = {os.path.basename(source[i]["path"]): source[i]["image"].astype(np.float32).mean(-1)
           for i in range(len(source))}
  for person, other in (("eileen", "grace"), ("grace", "eileen")):
    same = np.abs(crops[f"{person}_0.jpg"] - crops[f"{person}_2.jpg"]).mean()
    mirrored = np.abs(crops[f"{person}_0.jpg"] - crops[f"{person}_1.jpg"][:, ::-1]).mean()
    apart = np.abs(crops[f"{person}_0.jpg"] - crops[f"{other}_0.jpg"]).mean()
    assert max(same, mirrored) < 0.5 * apart, (person, same, mirrored, apart)

  config = tiny_config()
  config.data.synthetic = False
  config.data.dataset = "folder"
  config.data.data_dir = data_dir
  config.data.prepared_config = "study"
  config.data.normalization = "none"
  config.model.streams = ("orig",)
  config.data.val_share = 0.0
  config.eval.select = "last"
  config.total_steps = 2
  config.eval_every = -1
  assert registry.fold_count(config.data) == 4
  assert registry.label_names(config.data, "fer") == labels.EMOTIONS[:7]
  mean = evaluate.cross_validate(config, str(tmp_path / "cv"), folds=[2, 3])  # eileen, grace
  cv = json.load(open(tmp_path / "cv" / "cv.json"))
  assert cv["folds"] == [2, 3] and len(cv["per_fold"]) == 2
  assert 0.0 <= mean["accuracy"] <= 1.0
