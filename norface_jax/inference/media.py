"""Frames from photos and videos, streamed: what `launch/predict.py` reads.

`frames(images=..., videos=...)` yields `Frame`s one at a time, so memory stays flat on
long videos. Photos are every image file under a folder (recursively, sorted) or one
file; videos are decoded with PyAV (FFmpeg inside its wheel). A file that cannot be read
yields one `Frame` with `image=None` and `error` naming it, and the stream goes on with
the next file.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterator, Sequence

import numpy as np

from norface_jax.data.images import load_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclasses.dataclass
class Frame:
  """One picture: `file` (as given), `index` (frame number in a video, 0 for a photo),
  `time` in seconds (video), `image` uint8 (H, W, 3) or None with `error` set."""
  file: str
  index: int = 0
  time: float = 0.0
  image: np.ndarray | None = None
  error: str = ""


def list_images(root: str) -> list[str]:
  """The image files under folder `root` (recursively) or `root` itself, sorted."""
  if os.path.isfile(root):
    return [root]
  if not os.path.isdir(root):
    raise FileNotFoundError(f"--images={root!r} is neither an image file nor a directory")
  found = [os.path.join(d, f) for d, _, files in os.walk(root) for f in files
           if f.lower().endswith(IMAGE_SUFFIXES)]
  if not found:
    raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root!r}")
  return sorted(found)


def count_frames(images: str = "", videos: Sequence[str] = ()) -> int:
  """How many frames `frames` will yield (a video's container count; 0 where unknown)."""
  n = len(list_images(images)) if images else 0
  for path in videos:
    n += max(video_frame_count(path), 1)
  return n


def video_frame_count(path: str) -> int:
  import av
  try:
    with av.open(path) as container:
      return int(container.streams.video[0].frames or 0)
  except (av.error.FFmpegError, IndexError, OSError):
    return 0


def _video_frames(path: str) -> Iterator[Frame]:
  import av
  try:
    container = av.open(path)
  except (av.error.FFmpegError, OSError) as e:
    yield Frame(path, error=f"{path}: cannot open the video ({e})")
    return
  with container:
    if not container.streams.video:
      yield Frame(path, error=f"{path}: no video stream")
      return
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # FFmpeg decodes on its own threads.
    index = 0
    try:
      for frame in container.decode(stream):
        yield Frame(path, index, float(frame.time or 0.0), frame.to_ndarray(format="rgb24"))
        index += 1
    except (av.error.FFmpegError, OSError) as e:  # Truncated or corrupt after `index`.
      yield Frame(path, index, error=f"{path}: decoding stopped at frame {index} ({e})")
    if index == 0:
      yield Frame(path, error=f"{path}: no decodable frame")


def frames(images: str = "", videos: Sequence[str] = ()) -> Iterator[Frame]:
  """Every photo under `images`, then every frame of each video, in order."""
  for path in list_images(images) if images else ():
    try:
      yield Frame(path, image=load_image(path))
    except (ValueError, FileNotFoundError, OSError) as e:
      yield Frame(path, error=str(e) if path in str(e) else f"{path}: {e}")
  for path in videos:
    if not os.path.isfile(path):
      yield Frame(path, error=f"{path}: no such video file")
      continue
    yield from _video_frames(path)
