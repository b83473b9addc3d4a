"""Which I_n do the stage-1 losses prefer? Eq. 3 scored on known answers (SynthFACS).

  python -m norface_jax.training.stage1_landscape \
      --config=configs/normalizer.py:synthetic,runlocal,perception_dir=P [--config.loss.lambda_exp=...]

Before training F_nor, this asks whether its losses point at the right answer. On the
fixed target face I_t (the inference condition), each candidate output is scored by
the frozen perception networks exactly as the train step scores I_n (`stage1.loss_terms`;
L_adv left out: it depends on D, and L_rec is 0 as no pair is a copy pair):

- `true_In`: SynthFACS's true I_n, I_o's AUs rendered on the target (the answer);
- `target`: the bare target (F_nor ignores I_o);
- `original`: I_o itself (F_nor ignores I_t);
- `mean_face`: the batch's mean image (a blob; what a collapsed generator draws).

A weighting under which `target` costs less than `true_In` rewards a generator for
dropping the expression; under which `mean_face` costs less than `target`, for
collapsing. `margin/answer_vs_target` (target total - true_In total, > 0 is right) is
what the expression terms pay a generator for transferring the expression.
Writes JSON to stdout (and `--out`).
"""

from __future__ import annotations

import json
from typing import Any

import jax
import jax.numpy as jnp
from absl import app, flags, logging
from ml_collections import config_flags

from norface_jax.data import images as images_lib
from norface_jax.data import loader as data_loader
from norface_jax.data import registry
from norface_jax.losses import normalization as nor_losses
from norface_jax.training import stage1

CANDIDATES = ("true_In", "target", "original", "mean_face")
TERMS = ("perc", "id", "lm", "exp", "eye")


def landscape(config, perception: Any, max_examples: int = 256, batch_size: int = 32,
              split: str = "test") -> dict[str, float]:
  """Unweighted terms and the eq.-3 total (config.loss weights) of each candidate,
  averaged over up to `max_examples` faces of `split`."""
  target_u8, subject = images_lib.load_target(config.target, config.data)
  if not config.data.synthetic or subject is None:
    raise ValueError("the loss landscape needs SynthFACS and a `synthfacs:<subject>` target "
                     f"(the true I_n); got synthetic={config.data.synthetic}, "
                     f"target={config.target!r}")
  source = registry.make_source(stage1.eval_data(config, subject), split, task="au_intensity")
  exp_output = config.get("exp_output", "embedding")
  fns = perception.functions(exp_output)
  pv = {k: perception.variables[k] for k in stage1.LOSS_NETS}
  weights = dict(config.loss)
  perc_normalize = bool(config.get("perc_normalize", False))

  @jax.jit
  def score(x_o_u8, x_star_u8, valid):
    x_o = x_o_u8.astype(jnp.float32) / 255.0
    x_t = jnp.broadcast_to(jnp.asarray(target_u8, jnp.float32) / 255.0, x_o.shape)
    w = valid.astype(jnp.float32)
    blob = jnp.sum(x_o * w[:, None, None, None], 0) / jnp.maximum(jnp.sum(w), 1.0)
    cands = {"true_In": x_star_u8.astype(jnp.float32) / 255.0, "target": x_t,
             "original": x_o, "mean_face": jnp.broadcast_to(blob, x_o.shape)}
    out = {}
    for name, x_n in cands.items():  # Per face (a batch of one): padding stays out.
      per = jax.vmap(lambda a, b, c: terms_of_one(fns, pv, a, b, c, perc_normalize, exp_output))(
          x_o, x_t, x_n)
      out.update({f"{name}/{k}": jnp.sum(v * w) for k, v in per.items()})
    return out

  sums: dict[str, float] = {}
  seen = 0
  for batch in data_loader.eval_batches(source, batch_size=batch_size, keys=("image", "image_norm")):
    valid = batch.pop("_valid").astype(bool)
    for k, v in jax.device_get(score(batch["image"], batch["image_norm"], valid)).items():
      sums[k] = sums.get(k, 0.0) + float(v)
    seen += int(valid.sum())
    if max_examples and seen >= max_examples:
      break
  result: dict[str, float] = {"n": float(seen)}
  for name in CANDIDATES:
    comps = {k: sums[f"{name}/{k}"] / seen for k in TERMS}
    result.update({f"{name}/{k}": v for k, v in comps.items()})
    result[f"{name}/weighted"] = float(nor_losses.weighted_total(
        {k: jnp.asarray(v) for k, v in comps.items()}, weights))
  result["margin/answer_vs_target"] = result["target/weighted"] - result["true_In/weighted"]
  result["margin/answer_vs_original"] = result["original/weighted"] - result["true_In/weighted"]
  result["margin/answer_vs_mean_face"] = result["mean_face/weighted"] - result["true_In/weighted"]
  return result


def terms_of_one(fns, pv, x_o, x_t, x_n, perc_normalize: bool,
                 exp_output: str) -> dict[str, jax.Array]:
  """One face's eq. 6-10 terms for candidate `x_n` (inputs (H, W, C))."""
  same = jnp.zeros((1,), bool)
  terms = stage1.loss_terms(fns, pv, x_o[None], x_t[None], same, perc_normalize, exp_output)
  return {k: terms[k](x_n[None]) for k in TERMS}


def _define_flags() -> dict:
  return dict(
      config=config_flags.DEFINE_config_file("config", None, "Stage-1 config.", lock_config=True),
      max_examples=flags.DEFINE_integer("max_examples", 256, "Faces scored."),
      split=flags.DEFINE_enum("split", "test", ["test", "train"], "Which faces."),
      out=flags.DEFINE_string("out", "", "Also write the JSON here."))


def main(argv, f) -> None:
  del argv
  logging.set_verbosity(logging.INFO)
  config = f["config"].value
  perception = stage1.load_perception(config)
  result = landscape(config, perception, f["max_examples"].value, split=f["split"].value)
  text = json.dumps({"config_loss": dict(config.loss), "perc_normalize":
                     bool(config.get("perc_normalize", False)),
                     "exp_output": config.get("exp_output", "embedding"), **result}, indent=1)
  print(text)
  if f["out"].value:
    with open(f["out"].value, "w") as fh:
      fh.write(text)


if __name__ == "__main__":
  _flags = _define_flags()
  flags.mark_flags_as_required(["config"])
  app.run(lambda argv: main(argv, _flags))
