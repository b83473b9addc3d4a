"""Picture of SynthFACS: rows are identities, columns neutral, the emotions and single AUs.

  python -m norface_jax.data.synthfacs.grid --out docs/images/synthfacs_grid.png
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image, ImageDraw

from norface_jax.data import labels
from norface_jax.data.synthfacs import expression
from norface_jax.data.synthfacs import identity
from norface_jax.data.synthfacs import scene

SHOW_AUS = (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 24, 25, 26)


def grid(rows: int = 6, size: int = 96, seed: int = 0) -> np.ndarray:
  """uint8 picture; the last two rows are wild-domain faces."""
  rng = np.random.default_rng(seed)
  cols = ["neutral"] + list(labels.EMOTIONS[1:]) + [f"AU{a}" for a in SHOW_AUS]
  aus, asym = [], []
  for c in cols:
    a = np.zeros(len(labels.SYNTH_AUS), np.float32)
    s = 0.0
    if c.startswith("AU"):
      a[labels.SYNTH_AUS.index(int(c[2:]))] = 5
    elif c != "neutral":
      core, _ = expression.PROTOTYPES[c]
      for k in core:
        a[labels.SYNTH_AUS.index(k)] = 4
      s = 1.0 if c == "contempt" else 0.0
    aus.append(a)
    asym.append(s)
  people = [identity.sample_identity(rng, gender=r % 2, skin=(r // 2) % 2) for r in range(rows)]
  out_rows = []
  for r, person in enumerate(people):
    n = len(cols)
    dom = scene.WILD if r >= rows - 2 else scene.LAB
    pose = scene.frontal_pose(n) if dom == scene.LAB else scene.stack(
        [scene.sample_pose(rng, dom) for _ in range(n)])
    img = scene.render(identity.take(person, [0] * n), np.stack(aus), pose, domain=dom,
                       size=size, rng=rng, asym=np.float32(asym), identity_bias=0)["image"]
    out_rows.append(np.concatenate(list(img), axis=1))
  body = np.concatenate(out_rows, axis=0)
  header = Image.new("RGB", (body.shape[1], 14), "white")
  draw = ImageDraw.Draw(header)
  for j, c in enumerate(cols):
    draw.text((j * size + 3, 1), c[:9], fill="black")
  return np.concatenate([np.asarray(header), body], axis=0)


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument("--out", default="docs/images/synthfacs_grid.png")
  p.add_argument("--size", type=int, default=80)
  p.add_argument("--rows", type=int, default=6)
  a = p.parse_args(argv)
  # A 256-colour palette keeps the PNG small (the wild rows are noisy).
  Image.fromarray(grid(a.rows, a.size)).quantize(256).save(a.out, optimize=True)
  print(f"wrote {a.out}")


if __name__ == "__main__":
  main()
