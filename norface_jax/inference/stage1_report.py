"""Measures a trained stage 1 on SynthFACS: expression and identity consistency, a grid.

  python -m norface_jax.inference.stage1_report --workdir=workdirs/stage1 \
      [--perception_dir=W] [--max_examples=256] [--grid=docs/images/stage1_grid.png]

Expression consistency: the independent AU-intensity regressor (`eval_au` of the
perception workdir, never used by the stage-1 losses) on I_n against the ground truth
of I_o, test split (identities unseen by F_nor); the same regressor on I_o, and on
SynthFACS's true I_n (`_Istar`: I_o's expression rendered on the target), are the
references. Identity consistency: how often the independent identity classifier
(`eval_id`) assigns I_n to the target subject (I_o: the chance floor). The teachers:
`teacher/{exp,eye}_I{n,star,t}`, the stage-1 L_exp and L_eye of I_n, of the true I_n
and of the bare target against I_o (an I_n below the true I_n with no regressor ICC has
fooled the loss network). Writes
`<workdir>/stage1_report.json` (with `emm/...`, how the EMM's cross-attention spreads:
`emm_attention`) and a PNG grid (original | target | normalized).
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging
from PIL import Image

from norface_jax.data import images as images_lib
from norface_jax.data import registry
from norface_jax.evaluation import consistency
from norface_jax.inference import normalize
from norface_jax.training import perception_nets, sharding, stage1



def emm_attention(generator, params, images_o: np.ndarray, target_u8: np.ndarray) -> dict[str, float]:
  """How the EMM's cross-attention CA(Q_t, K_o) spreads over I_o's patches.

  `entropy`: mean row entropy / log(N) (1 = uniform, so CA * V_o is a global average of
  I_o); `self_mass`: mean weight a target patch gives the original's patch at the same
  place (uniform: 1/N); `argmax_self`: share of target patches whose strongest key is
  that patch. Patch tokens only (the class token is left out).
  """
  x_o = jnp.asarray(images_o, jnp.float32) / 255.0
  x_t = jnp.broadcast_to(jnp.asarray(target_u8, jnp.float32) / 255.0, x_o.shape)
  _, inter = generator.apply({"params": params}, x_o, x_t, train=False,
                             capture_intermediates=lambda m, _: m.name == "qkv")
  qkv_t, qkv_o = inter["intermediates"]["emm"]["qkv"]["__call__"]  # (B, N, 3, H, K) each
  q_t, k_o = qkv_t[:, 1:, 0], qkv_o[:, 1:, 1]
  logits = jnp.einsum("bnhk,bmhk->bhnm", q_t, k_o) / np.sqrt(q_t.shape[-1])
  ca = np.asarray(jax.nn.softmax(logits.astype(jnp.float32), -1))
  n = ca.shape[-1]
  diag = np.arange(n)
  return {"entropy": float(np.mean(-np.sum(ca * np.log(ca + 1e-12), -1)) / np.log(n)),
          "self_mass": float(np.mean(ca[..., diag, diag])), "uniform_mass": 1.0 / n,
          "argmax_self": float(np.mean(ca.argmax(-1) == diag))}


def report(workdir: str, perception_dir: str = "", target: str = "", max_examples: int = 256,
           grid_path: str = "", grid_size: int = 8, split: str = "test") -> dict:
  """The measurements on `split` ("test": identities F_nor never saw; "train": its own
  training faces, to tell what it cannot learn from what does not generalise)."""
  config, gen, params, step = stage1.load_generator(workdir)
  perception = perception_nets.load(perception_dir or config.perception_dir)
  target_u8, subject = images_lib.load_target(target or config.target, config.data)
  fn = normalize.make_normalize_fn(gen, params, target_u8)
  mesh = sharding.make_mesh([("data", -1)])
  source = registry.make_source(stage1.eval_data(config, subject), split, task="au_intensity")
  result = consistency.evaluate_consistency(fn, source, perception, subject,
                                            sharding.batch_sharding(mesh),
                                       batch_size=int(config.input.eval_batch_size),
                                       max_examples=max_examples, target_u8=target_u8,
                                       exp_output=config.get("exp_output", "embedding"))
  result["step"] = float(step)
  images = np.stack([source[i]["image"] for i in range(min(grid_size, len(source)))])
  result.update({f"emm/{k}": v for k, v in emm_attention(gen, params, images, target_u8).items()})
  grid = stage1.image_rows(jax.jit(fn), images, target_u8)
  paths = [os.path.join(workdir, "stage1_report_grid.png")] + ([grid_path] if grid_path else [])
  for p in paths:
    os.makedirs(os.path.dirname(os.path.abspath(p)), exist_ok=True)
    Image.fromarray(grid).save(p)
  result["split"] = split
  name = "stage1_report.json" if split == "test" else f"stage1_report_{split}.json"
  with open(os.path.join(workdir, name), "w") as f:
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
      grid_size=flags.DEFINE_integer("grid_size", 8, "Faces in the grid."),
      split=flags.DEFINE_enum("split", "test", ["test", "train"], "Which faces."))


def main(argv, flag_values) -> None:
  del argv
  logging.set_verbosity(logging.INFO)
  result = report(**{k: v.value for k, v in flag_values.items()})
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  _flags = _define_flags()
  app.run(lambda argv: main(argv, _flags))
