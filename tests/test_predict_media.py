"""`predict_media` on whole photos and a video: detection, alignment, one CSV row per
face and frame, flagged rows for frames without a face and for unreadable files."""

import csv
import os

import av
import numpy as np
import pytest
from PIL import Image

from norface_jax.inference import media, predict
from norface_jax.training import stage2
from tests.test_train_stage2 import tiny_config

skimage_data = pytest.importorskip("skimage.data", reason="scikit-image ships the test photo")


def write_video(path, frames, rate=10):
  container = av.open(str(path), "w")
  stream = container.add_stream("mpeg4", rate=rate)
  stream.height, stream.width = frames[0].shape[:2]
  stream.pix_fmt = "yuv420p"
  for f in frames:
    for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
      container.mux(packet)
  for packet in stream.encode():
    container.mux(packet)
  container.close()


@pytest.fixture(scope="module")
def fer_workdir(tmp_path_factory):
  """A one-stream FER model (2 steps): predictions need no stage-1 generator."""
  config = tiny_config()
  config.model.streams = ("orig",)
  config.data.normalization = "none"
  config.total_steps = 2
  config.eval_every = -1
  config.eval.select = "last"
  config.data.val_share = 0.0
  workdir = str(tmp_path_factory.mktemp("fer"))
  stage2.train_and_evaluate(config, workdir)
  return workdir


def test_photos_and_video_give_one_row_per_face_and_frame(tmp_path, fer_workdir):
  astronaut = skimage_data.astronaut()                       # 512 x 512, one face.
  photos = tmp_path / "photos"
  os.makedirs(photos / "sub")
  Image.fromarray(astronaut).save(photos / "astronaut.png")
  Image.fromarray(np.full((200, 300, 3), 128, np.uint8)).save(photos / "sub" / "grey.png")
  (photos / "sub" / "broken.jpg").write_bytes(b"not a jpeg")
  small = np.asarray(Image.fromarray(astronaut).resize((256, 256)))
  video = tmp_path / "clip.mp4"
  write_video(video, [np.roll(small, 4 * i, axis=1) for i in range(4)]
              + [np.full_like(small, 90)] * 2)
  out = tmp_path / "preds.csv"
  result = predict.predict_media(fer_workdir, str(out), images=str(photos),
                                 videos=[str(video), str(tmp_path / "missing.mp4")],
                                 detect_batch=4, canvas=256)
  rows = list(csv.DictReader(open(out)))
  header = list(rows[0])
  assert header[:len(predict.ROW_COLUMNS)] == predict.ROW_COLUMNS
  assert header[-1] == "emotion" and "happiness" in header

  by_file = {}
  for r in rows:
    by_file.setdefault(os.path.basename(r["file"]), []).append(r)
  # The photo: one face, on the astronaut's face (about x 170-250, y 40-140).
  (face,) = by_file["astronaut.png"]
  assert face["success"] == "1" and float(face["det_score"]) > 0.9
  x0, y0, x1, y1 = (float(face[k]) for k in ("x0", "y0", "x1", "y1"))
  assert 150 < (x0 + x1) / 2 < 260 and 40 < (y0 + y1) / 2 < 150, (x0, y0, x1, y1)
  probs = np.array([float(face[n]) for n in header[len(predict.ROW_COLUMNS):-1]])
  assert probs.sum() == pytest.approx(1.0, abs=1e-3)
  # A frame without a face and an unreadable file: flagged rows, the job goes on.
  (grey,) = by_file["grey.png"]
  assert grey["success"] == "0" and grey["note"] == "no face" and grey["face"] == "-1"
  (broken,) = by_file["broken.jpg"]
  assert broken["success"] == "0" and "broken.jpg" in broken["note"]
  (missing,) = by_file["missing.mp4"]
  assert "missing.mp4" in missing["note"]
  # The video: every frame once, in order, with its time; faces in the first four.
  clip = by_file["clip.mp4"]
  assert [int(r["frame"]) for r in clip] == list(range(6))
  assert [float(r["time"]) for r in clip] == pytest.approx([i / 10 for i in range(6)])
  assert [r["success"] for r in clip] == ["1"] * 4 + ["0"] * 2
  shifts = [(float(r["x0"]) + float(r["x1"])) / 2 for r in clip[:4]]
  assert np.diff(shifts) == pytest.approx([4.0] * 3, abs=1.5)  # The face moves 4 px a frame.

  assert result["frames"] == 2 + 6 and result["faces"] == 5 and result["no_face"] == 3
  assert result["unreadable"] == 2
  assert set(result["seconds"]) == {"decode", "detect", "align", "classify"}
  assert os.path.getsize(result["sheet"]) > 1000


def test_two_stream_model_needs_a_stage1_workdir(tmp_path, fer_workdir):
  from norface_jax.training import workdir as workdir_lib
  config = workdir_lib.load_config(fer_workdir)
  config.model.streams = ("orig", "norm")
  config.data.normalization = "precomputed"
  other = tmp_path / "two"  # Refused before any checkpoint is read.
  workdir_lib.save_config(config, str(other))
  with pytest.raises(ValueError, match="--stage1_workdir"):
    predict.predict_media(str(other), str(tmp_path / "p.csv"), images=str(tmp_path))


def test_frames_stream_reports_unreadable_files(tmp_path):
  (tmp_path / "bad.mp4").write_bytes(b"garbage" * 10)
  got = list(media.frames(videos=[str(tmp_path / "bad.mp4")]))
  assert len(got) == 1 and got[0].image is None and "bad.mp4" in got[0].error
  with pytest.raises(FileNotFoundError, match="nothing_here"):
    list(media.frames(images=str(tmp_path / "nothing_here")))
