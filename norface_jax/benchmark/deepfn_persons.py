"""Persons x iterations per second: one program for all persons vs the paper's loop.

  python -m norface_jax.benchmark.deepfn_persons --persons=8 --iterations=20 --size=64 --widths=8,16,32,64

Both train the same stacked states on the same draws; compile time is excluded (one
warm-up call each).
"""

from __future__ import annotations

import argparse
import time

import jax
import ml_collections
import numpy as np

from norface_jax.deepfn import ae_train


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__)
  ap.add_argument("--persons", type=int, default=8)
  ap.add_argument("--iterations", type=int, default=20)
  ap.add_argument("--size", type=int, default=64)
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument("--widths", default="8,16,32,64")
  ap.add_argument("--latent", type=int, default=64)
  ap.add_argument("--frames", type=int, default=32)
  ap.add_argument("--person_chunk", type=int, default=0)
  a = ap.parse_args(argv)
  cfg = ml_collections.ConfigDict(dict(
      widths=tuple(int(w) for w in a.widths.split(",")), latent=a.latent, batch_size=a.batch,
      lr=5e-5, b1=0.5, b2=0.999,
      warp=dict(rotation_deg=10.0, scale=0.05, shift=0.05, grid=5, noise=5 / 256)))
  trainer = ae_train.make_trainer(cfg)
  mesh = ae_train.person_mesh()
  rng = np.random.default_rng(0)
  x, n = ae_train.stack_person_images(
      [rng.uniform(size=(a.frames, a.size, a.size, 1)).astype(np.float32)
       for _ in range(a.persons)], mesh.shape["data"])
  y = rng.uniform(size=(a.frames, a.size, a.size, 1)).astype(np.float32)
  keys = jax.random.split(jax.random.PRNGKey(0), 2 * len(n))
  out = {"devices": len(jax.devices()), "platform": jax.devices()[0].platform,
         "persons": len(n), "iterations": a.iterations}
  for name in ("program", "loop"):
    def go(states):
      if name == "program":
        return ae_train.train_persons(trainer, states, x, n, y, keys[len(n):], a.iterations,
                                      mesh, person_chunk=a.person_chunk)
      return ae_train.train_one_at_a_time(trainer, jax.device_get(states), x, n, y,
                                          keys[len(n):], a.iterations)
    states = ae_train.init_persons(trainer, keys[:len(n)], a.size, mesh)
    jax.block_until_ready(go(states)[0])  # compile
    states = ae_train.init_persons(trainer, keys[:len(n)], a.size, mesh)
    t = time.perf_counter()
    jax.block_until_ready(go(states)[0])
    out[name] = len(n) * a.iterations / (time.perf_counter() - t)
  out["speedup"] = out["program"] / out["loop"]
  print(f"{out['platform']} x{out['devices']}: {out['persons']} persons x {a.iterations} its, "
        f"{a.size}px, batch {a.batch}, widths {a.widths}: program {out['program']:.2f}, "
        f"loop {out['loop']:.2f} persons*its/s; speedup {out['speedup']:.2f}x")
  return out


if __name__ == "__main__":
  main()
