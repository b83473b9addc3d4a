"""Writes a SynthFACS preset to disk in the real dataset's layout.

  python -m norface_jax.data.synthfacs --like bp4d --out /tmp/bp4d --subjects 6 --frames 4
"""

from __future__ import annotations

import argparse
import time

from norface_jax.data.synthfacs import presets
from norface_jax.data.synthfacs import writer


def main(argv=None) -> None:
  p = argparse.ArgumentParser(prog="python -m norface_jax.data.synthfacs", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--like", required=True, choices=sorted(presets.PRESETS))
  p.add_argument("--out", required=True, help="root folder to write")
  p.add_argument("--subjects", type=int, default=None, help="how many subjects (default all)")
  p.add_argument("--frames", type=int, default=4,
                 help="frames per subject and task (BP4D) or per subject (others)")
  p.add_argument("--size", type=int, default=112, help="image side, 64..256")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--identity_bias", type=float, default=1.0)
  a = p.parse_args(argv)
  t = time.perf_counter()
  n = writer.write(a.like, a.out, a.subjects, a.frames, a.size, a.seed, a.identity_bias)
  print(f"wrote {n} {a.like} images to {a.out} in {time.perf_counter() - t:.1f} s")


if __name__ == "__main__":
  main()
