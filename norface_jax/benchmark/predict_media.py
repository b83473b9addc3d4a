"""`launch/predict.py` on a video: frames/s, and the seconds spent decoding, detecting,
aligning and classifying, for a 64 px and a 224 px stage-2 model.

The models are stage-2 FER workdirs trained one step (throughput does not depend on
the weights): `configs/affectnet_fer.py:synthetic,runlocal` at 64 px (ViT mu/8, the
quickstart's size) and the same with a S/16 encoder at 224 px, one stream (a two-stream
model adds stage 1's generator to the classify step). The video is `--frames` frames of
the scikit-image astronaut photo (one face) in a 640x480 picture, moving 2 px a frame,
encoded with MPEG-4 by PyAV. Each model predicts the video twice in one process; the
second pass (compiled programs cached) is reported.

  taskset -c 0 python -m norface_jax.benchmark.predict_media [--frames=96] [--sizes=64,224]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

import numpy as np
from PIL import Image

from norface_jax import configlib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write_video(path: str, frames: int, width: int = 640, height: int = 480) -> None:
  import av
  import skimage.data
  face = np.asarray(Image.fromarray(skimage.data.astronaut()).resize((320, 320)))
  container = av.open(path, "w")
  stream = container.add_stream("mpeg4", rate=25)
  stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
  for i in range(frames):
    frame = np.full((height, width, 3), 60, np.uint8)
    x = 40 + (2 * i) % (width - 360)
    frame[80:400, x:x + 320] = face
    for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
      container.mux(packet)
  for packet in stream.encode():
    container.mux(packet)
  container.close()


def make_workdir(size: int, root: str) -> str:
  from norface_jax.training import stage2
  arg = "synthetic,runlocal,norm=none,steps=1,select=last"
  config = configlib.load_config(os.path.join(ROOT, "configs", "affectnet_fer.py") + ":" + arg)
  config.model.streams = ("orig",)
  config.data.image_size = size
  if size >= 224:
    config.model.encoder = "S/16"
  config.eval_every = -1
  workdir = os.path.join(root, f"fer_{size}")
  stage2.train_and_evaluate(config, workdir)
  return workdir


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--frames", type=int, default=96)
  p.add_argument("--sizes", default="64,224")
  p.add_argument("--detect_batch", type=int, default=8)
  args = p.parse_args()
  from norface_jax import console
  from norface_jax.inference import predict
  console.setup(verbose=False)
  root = tempfile.mkdtemp()
  video = os.path.join(root, "clip.mp4")
  write_video(video, args.frames)
  rows = []
  for size in (int(s) for s in args.sizes.split(",")):
    workdir = make_workdir(size, root)
    for _ in range(2):  # The second pass: compiled.
      r = predict.predict_media(workdir, os.path.join(root, f"p{size}.csv"), videos=[video],
                                detect_batch=args.detect_batch)
    rows.append((size, r))
  print(f"{args.frames} frames of 640x480 (one face each), detector canvas 640, "
        f"detect batch {args.detect_batch}; second pass of each model:")
  print(f"{'model':>10s} {'frames/s':>9s} {'decode s':>9s} {'detect s':>9s} {'align s':>8s} "
        f"{'classify s':>11s} {'faces':>6s}")
  for size, r in rows:
    s = r["seconds"]
    print(f"{size:>7d} px {r['frames_per_second']:9.1f} {s['decode']:9.2f} {s['detect']:9.2f} "
          f"{s['align']:8.2f} {s['classify']:11.2f} {r['faces']:6d}")
  print(json.dumps({str(size): {k: r[k] for k in ("frames_per_second", "seconds", "faces")}
                    for size, r in rows}))


if __name__ == "__main__":
  main()
