"""MTCNN detection: images/s after compile, and recall on SynthFACS frames.

  python -m norface_jax.benchmark.detection --batch 8 --sizes 640x480,1280x720 --scenes 64

The frames are SynthFACS scenes (`detection/scenes.py`: up to 3 faces each, at known
boxes), so R- and O-Net see a realistic number of candidates. Images/s is the median of
`--windows` timed `MTCNN.detect` calls on one batch, after a first call that compiles;
the per-batch seconds of its three stages (P-Net proposals with their NMS, R-Net, O-Net
with landmarks; each with its host-side crops and NMS) are medians of the same count.
Recall: the share of true faces with a detection of IoU >= 0.5. `--facenet` times
facenet-pytorch's own MTCNN (the PyTorch original, `benchmark/facenet_reference.py`) on
the same frames in the same process, alternating with ours window by window.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np

from norface_jax.benchmark import common
from norface_jax.detection import mtcnn
from norface_jax.detection import scenes


def stage_seconds(det: mtcnn.MTCNN, frames: np.ndarray, windows: int) -> dict[str, float]:
  """Median seconds per batch of the detector's three stages."""
  times = {"propose": [], "refine": [], "output": []}
  for _ in range(windows):
    t0 = time.perf_counter()
    boxes = det._propose(frames)  # pylint: disable=protected-access
    t1 = time.perf_counter()
    boxes = det._refine(frames, boxes)  # pylint: disable=protected-access
    t2 = time.perf_counter()
    det._output(frames, boxes)  # pylint: disable=protected-access
    t3 = time.perf_counter()
    for k, v in zip(times, (t1 - t0, t2 - t1, t3 - t2)):
      times[k].append(v)
  return {k: statistics.median(v) for k, v in times.items()}


def throughput(det: mtcnn.MTCNN, width: int, height: int, batch: int,
               windows: int) -> dict[str, float]:
  """images/s, the first call's seconds (compile included) and the stages' seconds."""
  frames, _ = scenes.render_scenes(batch, height, width, seed=1)
  t0 = time.perf_counter()
  det.detect(frames)
  first = time.perf_counter() - t0
  rate = common.median_rate(lambda: det.detect(frames), lambda: None, batch=batch,
                            warmup=1, windows=windows, steps_per_window=1)
  return {"images_per_sec": rate, "first_call_s": first,
          **stage_seconds(det, frames, windows)}


def facenet_rate(width: int, height: int, batch: int, windows: int) -> float:
  """images/s of facenet-pytorch's `MTCNN(keep_all=True).detect` on the same frames."""
  from norface_jax.benchmark import facenet_reference
  frames, _ = scenes.render_scenes(batch, height, width, seed=1)
  with facenet_reference.imported() as facenet:
    ref = facenet.MTCNN(keep_all=True, device="cpu")
    return common.median_rate(lambda: ref.detect(frames), lambda: None, batch=batch,
                              warmup=1, windows=windows, steps_per_window=1)


def recall(det: mtcnn.MTCNN, num: int, width: int, height: int, batch: int) -> dict:
  """`scenes.match` of the detections on `num` SynthFACS frames (seed 0)."""
  frames, truth = scenes.render_scenes(num, height, width, seed=0)
  found = []
  for i in range(0, num, batch):
    chunk = frames[i:i + batch]
    if len(chunk) < batch:  # keep one compiled batch size.
      chunk = np.concatenate([chunk, np.zeros((batch - len(chunk),) + chunk.shape[1:],
                                              np.uint8)])
    found += [d.boxes for d in det.detect(chunk)][:min(batch, num - i)]
  return scenes.match(found, truth)


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--batch", type=int, default=8, help="Frames per detect call.")
  p.add_argument("--sizes", default="640x480,1280x720", help="Frame sizes, WxH.")
  p.add_argument("--windows", type=int, default=5, help="Timed calls per size.")
  p.add_argument("--scenes", type=int, default=64, help="Frames for recall (0: none).")
  p.add_argument("--weights_dir", default=None, help="Folder of {pnet,rnet,onet}.pt.")
  p.add_argument("--facenet", action="store_true", help="Also time facenet-pytorch's MTCNN.")
  a = p.parse_args(argv)
  det = mtcnn.MTCNN(mtcnn.load_params(a.weights_dir))
  print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), "
        f"batch {a.batch}, median of {a.windows}")
  sizes = [tuple(int(v) for v in s.split("x")) for s in a.sizes.split(",")]
  for w, h in sizes:
    r = throughput(det, w, h, a.batch, a.windows)
    print(f"{w}x{h}: {r['images_per_sec']:7.2f} images/s  (first call {r['first_call_s']:.1f} s "
          f"with compile; per batch: P-Net stage {r['propose']:.3f} s, R-Net stage "
          f"{r['refine']:.3f} s, O-Net stage {r['output']:.3f} s)")
    if a.facenet:
      ref = facenet_rate(w, h, a.batch, a.windows)
      print(f"{w}x{h}: {ref:7.2f} images/s  facenet-pytorch (PyTorch {torch_version()}), "
            f"ours / facenet = {r['images_per_sec'] / ref:.2f}x")
  if a.scenes:
    w, h = sizes[0]
    m = recall(det, a.scenes, w, h, a.batch)
    print(f"recall on {a.scenes} SynthFACS frames {w}x{h} ({m['faces']} faces, IoU >= 0.5): "
          f"{m['recall']:.3f}; {m['false_positives']} false positives; "
          f"mean IoU {m['mean_iou']:.2f}")


def torch_version() -> str:
  import torch
  return torch.__version__


if __name__ == "__main__":
  main()
