"""Predicts AUs or emotions with a trained stage-2 workdir.

Whole photos and videos (faces found with MTCNN, aligned as the training crops were,
normalized by stage 1 where the model has a normalized stream; one CSV row per face and
frame, and a contact sheet):
  python launch/predict.py --workdir=W --images=DIR --out=preds.csv
  python launch/predict.py --workdir=W --video=clip.mp4 --out=preds.csv [--stage1_workdir=S1]

Face crops someone already made (`--crops`: no detection; one row per image):
  python launch/predict.py --workdir=W --images=DIR --crops --out=preds.csv [--normalized=DIR]
"""

from absl import app, flags

from norface_jax import console
from norface_jax.inference import predict

_WORKDIR = flags.DEFINE_string("workdir", None, "Trained stage-2 workdir.")
_IMAGES = flags.DEFINE_string("images", "", "An image, or a folder of images (searched recursively).")
_VIDEO = flags.DEFINE_list("video", [], "Video file(s), comma-separated.")
_OUT = flags.DEFINE_string("out", "preds.csv", "Output CSV.")
_CROPS = flags.DEFINE_bool("crops", False, "--images holds face crops: predict them as they are.")
_NORMALIZED = flags.DEFINE_string("normalized", "", "With --crops: folder of normalized faces, same relative paths.")
_STAGE1 = flags.DEFINE_string("stage1_workdir", "", "Stage-1 workdir that makes I_n (two-stream models).")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Faces per classifier batch.")
_DETECT_BATCH = flags.DEFINE_integer("detect_batch", 8, "Frames per detector batch.")
_CANVAS = flags.DEFINE_integer("canvas", 640, "Frames are scaled to fit this square for detection.")
_MAX_FACES = flags.DEFINE_integer("max_faces", 0, "Keep the N highest-scoring faces per frame (0: all).")
_SHEET = flags.DEFINE_string("sheet", "", "Contact sheet PNG (default: <out stem>_sheet.png).")
_WHICH = flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which checkpoint.")
_SKIP = flags.DEFINE_bool("skip_bad", False, "With --crops: skip (and count) unreadable images.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  del argv
  console.setup()
  if not _IMAGES.value and not _VIDEO.value:
    raise app.UsageError("give --images and/or --video")
  if _CROPS.value:
    if _VIDEO.value:
      raise app.UsageError("--crops reads face crops from --images, not videos")
    predict.predict_folder(_WORKDIR.value, _IMAGES.value, _OUT.value, normalized=_NORMALIZED.value,
                           batch_size=_BATCH.value, which=_WHICH.value, skip_bad=_SKIP.value)
    return
  predict.predict_media(_WORKDIR.value, _OUT.value, images=_IMAGES.value, videos=_VIDEO.value,
                        stage1_workdir=_STAGE1.value, which=_WHICH.value,
                        batch_size=_BATCH.value, detect_batch=_DETECT_BATCH.value,
                        canvas=_CANVAS.value, max_faces=_MAX_FACES.value, sheet=_SHEET.value)


if __name__ == "__main__":
  app.run(main)
