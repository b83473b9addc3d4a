"""The frozen perception networks behind stage 1's losses: build, initialise, load.

A perception dir holds `perception.json` and an Orbax checkpoint. Two kinds:
- trained here on SynthFACS (`perception_train`): seven networks (`NETS`), their
  architecture in `meta["nets"]`;
- imported from the public PyTorch weights (`kind: "imported"`,
  `interop/perception_import.py`): the five loss networks, each with an architecture
  spec in `meta["imported"]` (`build_imported_modules`).
`load(perception_dir)` returns `perception.PerceptionNets` for either.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from norface_jax.data import labels
from norface_jax.models import fan, perception, resnet
from norface_jax.training import checkpointing, optim

NETS = ("vgg", "identity", "landmarks", "expression", "eyebrow", "eval_au", "eval_id")


@flax.struct.dataclass
class PerceptionState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


def expression_backbone(nets: Any, image_size: int) -> nn.Module:
  """The expression embedding (`nets.exp_dim` wide) behind L_exp.

  exp_arch="iresnet": a small IResNet (the FECNet/ArcFace-style default).
  exp_arch="conv": the position-aware conv net of the evaluation AU regressor
  (`ConvClassifier`, flatten head) with an `exp_dim` output; on 64 px SynthFACS it
  regresses AU intensities on unseen subjects better (docs/stage1.md).
  """
  arch = nets.get("exp_arch", "iresnet")
  if arch == "iresnet":
    return perception.IResNet(tuple(nets.layers), tuple(nets.widths), nets.exp_dim,
                              final_bn=False, input_size=image_size)
  if arch == "conv":
    return perception.ConvClassifier(tuple(nets.eval_cfg), nets.exp_dim, head="flatten")
  raise ValueError(f"config.nets.exp_arch={arch!r}: expected 'iresnet' or 'conv'")


def exp_au_names(nets: Any, au_names: list[str]) -> list[str]:
  """The AUs the expression network's head regresses: the dataset's intensity AUs
  (`au_names`), or with `nets.exp_targets="all"` every SynthFACS AU."""
  targets = nets.get("exp_targets", "dataset")
  if targets == "dataset":
    return list(au_names)
  if targets == "all":
    return [f"AU{a}" for a in labels.SYNTH_AUS]
  raise ValueError(f"config.nets.exp_targets={targets!r}: expected 'dataset' or 'all'")


def build_modules(nets: Any, image_size: int, num_subjects: int, num_aus: int,
                  num_exp_aus: int | None = None) -> dict[str, nn.Module]:
  """The seven networks (with their training heads) from `config.nets`; the expression
  head has `num_exp_aus` outputs (default `num_aus`)."""
  res = lambda out, final_bn: perception.IResNet(
      tuple(nets.layers), tuple(nets.widths), out, final_bn=final_bn, input_size=image_size)
  return {
      "vgg": perception.VGGWithHeads(tuple(nets.vgg_cfg), num_subjects, num_aus),
      "identity": perception.WithHead(res(nets.id_dim, True), num_subjects, cosine=True),
      "landmarks": res(68 * 2, False),
      "expression": perception.WithHead(expression_backbone(nets, image_size),
                                        num_exp_aus or num_aus),
      "eyebrow": res(4, False),
      "eval_au": perception.ConvClassifier(tuple(nets.eval_cfg), num_aus,
                                           head=nets.get("eval_au_head", "gap")),
      "eval_id": perception.ConvClassifier(tuple(nets.eval_cfg), num_subjects),
  }


def init_variables(modules: dict[str, nn.Module], image_size: int, rng: jax.Array) -> dict[str, Any]:
  x = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
  rngs = jax.random.split(rng, len(modules))
  return {name: dict(m.init(r, x, False)) for (name, m), r in zip(sorted(modules.items()), rngs)}


def _split(variables: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
  params = {k: v["params"] for k, v in variables.items()}
  stats = {k: v["batch_stats"] for k, v in variables.items() if "batch_stats" in v}
  return params, stats


def make_tx(optim_config: Any, total_steps: int) -> optax.GradientTransformation:
  """Adam (0.9, 0.999) at a constant `lr`, or (schedule="cosine") a warm-up of at most a
  tenth of the run, then cosine decay to 1%, through `optim.make_optimizer`.

  The regressors (landmarks, AU intensities) need the decay: at a constant 1e-3 their
  test error stalls well above what the same step budget reaches with it.
  """
  c = dict(optim_config)
  cosine = c.get("schedule", "constant") == "cosine"
  warmup = min(int(c.get("warmup_steps", 50)), max(total_steps // 10, 1)) if cosine else 0
  tx, _ = optim.make_optimizer(ml_collections.ConfigDict(dict(
      name="adam", lr=float(c["lr"]), b1=0.9, b2=0.999, eps=1e-8, schedule=c.get("schedule", "constant"),
      warmup_steps=warmup, end_lr_factor=0.01)), total_steps)
  return tx


def random_perception(nets: Any, image_size: int, num_subjects: int = 4, num_aus: int = 5,
                      seed: int = 0) -> perception.PerceptionNets:
  """Randomly initialised networks: for smoke tests only (config `perception_dir="random"`)."""
  modules = build_modules(nets, image_size, num_subjects, num_aus)
  # One compiled program: op-by-op, the initialisers compile hundreds of tiny ones.
  variables = jax.jit(lambda r: init_variables(modules, image_size, r))(jax.random.key(seed))
  meta = {"image_size": image_size, "subjects": list(range(num_subjects)),
          "au_names": [f"AU{i}" for i in range(num_aus)], "random": True}
  return perception.PerceptionNets(modules, variables, meta)


def load(perception_dir: str) -> perception.PerceptionNets:
  """The trained networks of a `perception_train` workdir (latest checkpoint), or the
  imported public ones of a `perception_import` directory (`kind: "imported"`)."""
  perception_dir = os.path.abspath(os.path.expanduser(perception_dir))
  path = os.path.join(perception_dir, "perception.json")
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"{path} not found: train the perception networks first with\n  python launch/train.py "
        f"--config=configs/perception_synthfacs.py --workdir={perception_dir}\nor import the "
        f"public PyTorch weights with launch/import_perception.py --out={perception_dir}")
  with open(path) as f:
    meta = json.load(f)
  if meta.get("kind") == "imported":  # Public PyTorch weights (launch/import_perception.py).
    return read_imported(perception_dir, meta)
  nets = ml_collections.ConfigDict(meta["nets"])
  modules = build_modules(nets, meta["image_size"], len(meta["subjects"]), len(meta["au_names"]),
                          len(exp_au_names(nets, meta["au_names"])))
  tx = make_tx(meta.get("optim", {"lr": 1.0}), int(meta.get("total_steps", 1)))  # Its state's shape.

  def init_fn(rng):
    params, stats = _split(init_variables(modules, meta["image_size"], rng))
    return PerceptionState(jnp.zeros((), jnp.int32), params, stats, tx.init(params))

  repl = jax.sharding.NamedSharding(jax.sharding.Mesh(np.asarray(jax.devices()), ("d",)),
                                    jax.sharding.PartitionSpec())
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=repl),
                          jax.eval_shape(init_fn, jax.random.key(0)))
  state, step = checkpointing.restore_state_only(
      os.path.join(perception_dir, "checkpoints"), abstract)
  logging.debug("Loaded perception networks of step %d from %s.", step, perception_dir)
  variables = {name: {"params": state.params[name]} for name in modules}
  for name, stats in state.batch_stats.items():
    variables[name]["batch_stats"] = stats
  return perception.PerceptionNets(modules, variables, meta)


def build_imported_modules(specs: Mapping[str, Mapping[str, Any]]) -> dict[str, nn.Module]:
  """The Flax modules of `perception.json`'s `imported` specs."""
  out = {}
  for name, s in specs.items():
    arch = s["arch"]
    if arch == "vgg":
      out[name] = perception.VGGFeatures(tuple(s["cfg"]), s["num_outputs"], s["input_size"])
    elif arch == "iresnet":
      out[name] = perception.IResNet(tuple(s["layers"]), tuple(s["widths"]), s["num_features"],
                                     s["final_bn"], s["input_size"])
    elif arch == "fan":
      out[name] = fan.FAN(s["num_modules"], s["input_size"], s["temperature"])
    elif arch == "resnet":
      out[name] = resnet.ResNet(tuple(s["layers"]), s["block"], s["num_outputs"],
                                s["input_size"], s["normalize"])
    elif arch == "deca_flame":
      channels = s["exp_channels"]
      out[name] = resnet.FlameEncoder(None if channels is None else tuple(channels),
                                      s["input_size"])
    else:
      raise ValueError(f"perception.json: net {name!r} has unknown arch {arch!r}")
  return out


def read_imported(perception_dir: str, meta: Mapping[str, Any]) -> perception.PerceptionNets:
  """The imported networks of a directory `write` made (`meta`: its perception.json)."""
  modules = build_imported_modules(meta["imported"])
  x = jnp.zeros((1, 64, 64, 3), jnp.float32)  # Every net resizes inside; shapes only.
  repl = jax.sharding.NamedSharding(jax.sharding.Mesh(np.asarray(jax.devices()), ("d",)),
                                    jax.sharding.PartitionSpec())
  abstract = {name: jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=repl),
                                 jax.eval_shape(m.init, jax.random.key(0), x))
              for name, m in modules.items()}
  variables, _ = checkpointing.restore_state_only(
      os.path.join(perception_dir, "checkpoints"), abstract)
  return perception.PerceptionNets(modules, {k: dict(v) for k, v in variables.items()}, dict(meta))
