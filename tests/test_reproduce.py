"""Every command of docs/reproduce.md names real scripts, flags, configs and config keys."""

import ast
import os
import re
import shlex

import pytest

from norface_jax import configlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "reproduce.md")


def commands():
  lines = [line.strip() for line in open(DOC) if line.strip().startswith("python launch/")]
  env = {"D": "/data/prepared", "W": "/work/runs", "R": "/data/raw"}
  return [shlex.split(re.sub(r"\$(\w+)", lambda m: env[m.group(1)], line)) for line in lines]


def defined_flags(script: str) -> set[str]:
  text = open(os.path.join(ROOT, script)).read()
  flags = set(re.findall(r"DEFINE_\w+\(\s*\"(\w+)\"", text))
  return flags | set(re.findall(r"DEFINE_config_file\(\s*\"(\w+)\"", text))


def test_the_page_lists_every_table():
  text = open(DOC).read()
  for n in range(1, 13):
    assert re.search(rf"[Tt]able {n}\b", text), n
  assert "DeepFN table 5" in text and len(commands()) >= 40


@pytest.mark.parametrize("argv", commands(), ids=lambda a: " ".join(a[1:3])[:60])
def test_command_scripts_flags_configs_and_overrides_exist(argv):
  assert argv[0] == "python" and os.path.isfile(os.path.join(ROOT, argv[1])), argv[1]
  known = defined_flags(argv[1])
  config = None
  for arg in argv[2:]:
    name, _, value = arg[2:].partition("=")
    if name.startswith("config."):
      assert config is not None, f"{arg} before --config"
      keys = name.split(".")[1:]
      node = config
      for k in keys[:-1]:
        node = node[k]
      assert keys[-1] in node, f"{name}: no such key"
      old = node[keys[-1]]
      try:
        new = ast.literal_eval(value)
      except (ValueError, SyntaxError):
        new = value
      if isinstance(old, bool) or isinstance(new, bool):
        assert isinstance(old, bool) and isinstance(new, bool), name
      elif isinstance(old, (int, float)):
        assert isinstance(new, (int, float)), name
      else:
        assert type(new) is type(old), (name, type(old), type(new))
      continue
    assert name in known, f"{argv[1]} defines no --{name}"
    if name == "config":
      path, _, args = value.partition(":")
      config = configlib.load_config(os.path.join(ROOT, path) + (f":{args}" if args else ""))


def _stage_commands(stage):
  """The page's training commands of `stage` as (argv, config with its overrides)."""
  out = []
  for argv in commands():
    if argv[1] not in ("launch/train.py", "launch/evaluate.py"):
      continue
    config = None
    for arg in argv[2:]:
      name, _, value = arg[2:].partition("=")
      if name == "config":
        path, _, args = value.partition(":")
        config = configlib.load_config(os.path.join(ROOT, path) + (f":{args}" if args else ""))
      elif name.startswith("config."):
        keys = name.split(".")[1:]
        node = config
        for k in keys[:-1]:
          node = node[k]
        try:
          node[keys[-1]] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
          node[keys[-1]] = value
    if config.get("stage", "cla") == stage:
      out.append((argv, config))
  return out


def _name(a):
  return a[-1].rsplit("/", 1)[-1] if isinstance(a, list) else ""


@pytest.mark.parametrize("argv,config", _stage_commands("nor"), ids=_name)
def test_stage1_command_first_step_traces(argv, config):
  """Each stage-1 command's first train step (D and G updates with every loss), traced
  at CPU size with loss networks of the same interfaces (shapes only: nothing runs)."""
  import jax
  import jax.numpy as jnp
  from norface_jax.training import stage1
  c = config
  c.data.image_size = 64
  c.model.encoder = "mu/8"
  c.model.decoder_channels = (16, 8, 8)  # x8: the mu/8 patch.
  c.mesh = (("data", -1),)
  import ml_collections
  from norface_jax.models import perception as perception_lib
  from norface_jax.training import perception_nets
  setup = stage1.Setup(c)
  nets = ml_collections.ConfigDict(dict(layers=(1, 1, 1, 1), widths=(8, 8, 16, 16), id_dim=16,
                                        exp_dim=8, vgg_cfg=(8, "M", 16, 16), eval_cfg=(8, "M", 16)))
  modules = perception_nets.build_modules(nets, 64, 4, 5)
  variables = jax.eval_shape(lambda r: perception_nets.init_variables(modules, 64, r),
                             jax.random.key(0))
  perception = perception_lib.PerceptionNets(modules, variables, {})
  pv = {k: variables[k] for k in stage1.LOSS_NETS}
  step = stage1.make_train_step(setup.gen, setup.disc, perception.functions(), c, setup.g_tx,
                                setup.d_tx)
  batch = {"image": jnp.zeros((8, 64, 64, 3), jnp.uint8)}
  new, metrics = jax.eval_shape(step, setup.abstract_state, batch, jax.random.key(0), pv)
  assert jax.tree.structure(new) == jax.tree.structure(setup.abstract_state)
  assert all(metrics[f"loss/{k}"].shape == () for k in ("rec", "perc", "id", "lm", "exp", "eye"))


@pytest.mark.parametrize("argv,config", _stage_commands("cla"),
                         ids=_name)
def test_stage2_command_first_step_traces(argv, config, monkeypatch):
  """Each stage-2 command's first train step, traced (not compiled) at CPU size: the
  command's model, losses and augmentation with a tiny encoder on SynthFACS (its
  `precomputed` faces become the oracle's; the features stream gets random networks)."""
  import jax
  import jax.numpy as jnp
  from norface_jax.training import stage2
  c = config
  c.data.synthetic = True
  c.data.preset = c.data.dataset
  c.data.image_size = 32
  c.model.encoder = "mu/8"
  c.init_from = ""
  if c.data.normalization == "precomputed":
    c.data.normalization = "oracle"
  c.mesh = (("data", -1),)
  c.input.batch_size = 8
  features = stage2.uses_features(c)
  if features:  # No perception networks here: the stream's width is what matters.
    monkeypatch.setattr(stage2, "feature_dim", lambda _: 36)
  setup = stage2.build(c, num_train_examples=4)
  task = setup.task
  labels = (jnp.zeros((8,), jnp.int32) if task.name == "fer"
            else jnp.zeros((8, task.num_outputs), jnp.float32))
  batch = {"image": jnp.zeros((8, 32, 32, 3), jnp.uint8), task.label_key: labels}
  if stage2.uses_normalized(c):
    batch["image_norm"] = batch["image"]
  prepare = (lambda frozen, b: dict(b, features=jnp.zeros((8, 36)))) if features else None
  step = stage2.make_train_step(setup.model, task, c, setup.tx, prepare)
  new, metrics = jax.eval_shape(step, setup.abstract_state, batch, jax.random.key(0), None)
  assert metrics["training_loss"].shape == ()
  assert jax.tree.structure(new) == jax.tree.structure(setup.abstract_state)
