"""Renderer throughput: faces/s, median over repeats after a warm-up.

  python -m norface_jax.benchmark.synthfacs_render --size 128
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from norface_jax.data.synthfacs import expression
from norface_jax.data.synthfacs import identity
from norface_jax.data.synthfacs import scene


def faces_per_second(size: int, batch: int, domain: int | None, repeats: int) -> float:
  """Median faces/s of `scene.render` on a fixed random batch (domain None = half wild)."""
  rng = np.random.default_rng(0)
  ident = identity.stack([identity.sample_identity(rng) for _ in range(batch)])
  au = np.stack([expression.sample_expression(rng, i % 8)[0] for i in range(batch)])
  doms = np.arange(batch) % 2 if domain is None else np.full(batch, domain)
  pose = scene.stack([scene.sample_pose(rng, d) for d in doms])
  sc = scene.stack([scene.sample_scene(rng, d) for d in doms])
  scene.render(ident, au, pose, size=size, scene=sc)  # warm-up.
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    scene.render(ident, au, pose, size=size, scene=sc)
    times.append(time.perf_counter() - t)
  return batch / float(np.median(times))


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--size", type=int, default=128)
  p.add_argument("--batch", type=int, default=256)
  p.add_argument("--repeats", type=int, default=5)
  a = p.parse_args(argv)
  for name, dom in (("lab", scene.LAB), ("wild", scene.WILD), ("mixed", None)):
    fps = faces_per_second(a.size, a.batch, dom, a.repeats)
    print(f"size {a.size} {name:>5}: {fps:7.1f} faces/s (batch {a.batch}, median of {a.repeats})")


if __name__ == "__main__":
  main()
