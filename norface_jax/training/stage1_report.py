"""Measures a trained stage 1 on SynthFACS: expression and identity consistency, a grid.

  python -m norface_jax.training.stage1_report --workdir=workdirs/stage1 \
      [--perception_dir=W] [--max_examples=256] [--grid=docs/images/stage1_grid.png]

Expression consistency: the independent AU-intensity regressor (`eval_au` of the
perception workdir, never used by the stage-1 losses) on I_n against the ground truth
of I_o, test split (identities unseen by F_nor); the same regressor on I_o is the
ceiling. Identity consistency: how often the independent identity classifier
(`eval_id`) assigns I_n to the target subject (I_o: the chance floor). Writes
`<workdir>/stage1_report.json` and a PNG grid (original | target | normalized).
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
from absl import app, flags, logging
from PIL import Image

from norface_jax.data import registry
from norface_jax.training import normalize, perception_train, sharding, stage1



def report(workdir: str, perception_dir: str = "", target: str = "", max_examples: int = 256,
           grid_path: str = "", grid_size: int = 8) -> dict[str, float]:
  config, gen, params, step = stage1.load_generator(workdir)
  perception = perception_train.load(perception_dir or config.perception_dir)
  target_u8, subject = normalize.load_target(target or config.target, config.data)
  fn = normalize.make_normalize_fn(gen, params, target_u8)
  mesh = sharding.make_mesh([("data", -1)])
  source = registry.make_source(config.data, "test", task="au_intensity")
  result = stage1.evaluate_consistency(fn, source, perception, subject, mesh,
                                       batch_size=int(config.input.eval_batch_size),
                                       max_examples=max_examples)
  result["step"] = float(step)
  images = np.stack([source[i]["image"] for i in range(min(grid_size, len(source)))])
  grid = stage1.image_rows(fn, images, target_u8, mesh)
  paths = [os.path.join(workdir, "stage1_report_grid.png")] + ([grid_path] if grid_path else [])
  for p in paths:
    os.makedirs(os.path.dirname(os.path.abspath(p)), exist_ok=True)
    Image.fromarray(grid).save(p)
  with open(os.path.join(workdir, "stage1_report.json"), "w") as f:
    json.dump(result, f, indent=1)
  return result


def _define_flags() -> dict:
  """Command-line flags, defined only when run as a program (importing defines none)."""
  return dict(
      workdir=flags.DEFINE_string("workdir", None, "Stage-1 workdir.", required=True),
      perception_dir=flags.DEFINE_string("perception_dir", "", "Default: the config's perception_dir."),
      target=flags.DEFINE_string("target", "", "Default: the config's target."),
      max_examples=flags.DEFINE_integer("max_examples", 256, "Test faces measured (0 = all)."),
      grid_path=flags.DEFINE_string("grid", "", "Also write the grid PNG here."),
      grid_size=flags.DEFINE_integer("grid_size", 8, "Faces in the grid."))


def main(argv, flag_values) -> None:
  del argv
  logging.set_verbosity(logging.INFO)
  result = report(**{k: v.value for k, v in flag_values.items()})
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  _flags = _define_flags()
  app.run(lambda argv: main(argv, _flags))
