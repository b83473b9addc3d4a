"""facenet-pytorch's MTCNN, the reference `detection/mtcnn.py` ports: imported for the
parity tests (tests/test_detection.py) and the side-by-side timing
(`benchmark/detection.py --facenet`).

facenet-pytorch imports torchvision for `batched_nms` alone, and torchvision's PyPI wheel
(a CUDA build) does not load beside the pinned CPU torch. `imported()` puts a stand-in
torchvision into `sys.modules` (a pure-torch `batched_nms` with torchvision's semantics),
imports `facenet_pytorch.models.mtcnn`, and takes both out again on exit.
"""

from __future__ import annotations

import contextlib
import sys
import types
from typing import Iterator

STANDIN = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional",
           "torchvision.ops", "torchvision.ops.boxes")


def batched_nms(boxes, scores, idxs, iou_threshold):
  """torchvision.ops.batched_nms: greedy NMS within each idx; kept indices by
  descending score (stable); IoU with areas (x1 - x0)(y1 - y0), suppressed when >."""
  import torch
  if boxes.numel() == 0:
    return torch.empty((0,), dtype=torch.int64)
  order = torch.sort(scores, descending=True, stable=True).indices
  b, cls = boxes[order], idxs[order]
  x0, y0, x1, y1 = b.unbind(1)
  area = (x1 - x0) * (y1 - y0)
  alive = torch.ones(len(b), dtype=torch.bool)
  keep = []
  for a in range(len(b)):
    if alive[a]:
      keep.append(a)
      inter = ((torch.minimum(x1[a], x1) - torch.maximum(x0[a], x0)).clamp(min=0) *
               (torch.minimum(y1[a], y1) - torch.maximum(y0[a], y0)).clamp(min=0))
      iou = inter / (area[a] + area - inter)
      alive &= ~((iou.double() > iou_threshold) & (cls == cls[a]))
  return order[torch.tensor(keep, dtype=torch.int64)]


@contextlib.contextmanager
def imported() -> Iterator[types.ModuleType]:
  """`facenet_pytorch.models.mtcnn`, imported beside the stand-in torchvision."""
  mods = {n: types.ModuleType(n) for n in STANDIN}
  mods["torchvision"].transforms = mods["torchvision.transforms"]
  mods["torchvision.transforms"].functional = mods["torchvision.transforms.functional"]
  mods["torchvision"].ops = mods["torchvision.ops"]
  mods["torchvision.ops"].boxes = mods["torchvision.ops.boxes"]
  mods["torchvision.ops.boxes"].batched_nms = batched_nms
  ours = lambda n: n.split(".")[0] in ("torchvision", "facenet_pytorch")  # noqa: E731
  saved = {n: m for n, m in sys.modules.items() if ours(n)}
  sys.modules.update(mods)
  try:
    from facenet_pytorch.models import mtcnn as facenet_mtcnn  # pylint: disable=g-import-not-at-top
    yield facenet_mtcnn
  finally:
    for n in [n for n in sys.modules if ours(n)]:
      del sys.modules[n]
    sys.modules.update(saved)
