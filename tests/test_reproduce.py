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
