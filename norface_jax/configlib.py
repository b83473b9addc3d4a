"""The config convention: `--config=configs/<name>.py:key=value,flag,...`.

Every `configs/<name>.py` defines `get_config(arg: str | None)`. The part after the
colon is parsed here into a `ConfigDict` of known keys with typed defaults; an unknown
key or flag is an error that names it (a typo must never silently train the wrong
model).
"""

from __future__ import annotations

import ast
from typing import Any

import ml_collections


def _parse_value(text: str, default: Any, key: str) -> Any:
  if isinstance(default, bool):
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
      return True
    if low in ("0", "false", "no", "off"):
      return False
    raise ValueError(f"config arg {key!r}: expected a boolean, got {text!r}")
  if isinstance(default, int):
    try:
      return int(text)
    except ValueError:
      raise ValueError(f"config arg {key!r}: expected an int, got {text!r}") from None
  if isinstance(default, float):
    try:
      return float(text)
    except ValueError:
      raise ValueError(f"config arg {key!r}: expected a float, got {text!r}") from None
  if isinstance(default, (tuple, list)):
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = tuple(p for p in text.split("+") if p)
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)
  return text


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
  """Parses `"key=value,flag,..."` against `defaults`.

  A bare `flag` sets a boolean default to True. Values are converted to the type of
  their default. Unknown keys raise `ValueError` naming the key and the known ones.

  >>> parse_arg("synthetic,variant=S/16", synthetic=False, runlocal=False, variant="B/16")
  """
  parsed = ml_collections.ConfigDict(dict(defaults))
  if not arg:
    return parsed
  for item in arg.split(","):
    item = item.strip()
    if not item:
      continue
    key, sep, value = item.partition("=")
    key = key.strip()
    if key not in defaults:
      known = ", ".join(sorted(defaults))
      raise ValueError(f"unknown config arg {key!r} in {arg!r}; known: {known}")
    if not sep:
      if not isinstance(defaults[key], bool):
        raise ValueError(f"config arg {key!r} needs a value ({key}=...)")
      parsed[key] = True
    else:
      parsed[key] = _parse_value(value.strip(), defaults[key], key)
  return parsed


def split_arg(arg: str | None, keys: tuple[str, ...]) -> tuple[str, str]:
  """`"a=1,flag,b=2"` -> (the items whose key is in `keys`, the others), each joined
  again: a config file parses its own keys and hands the rest to a shared builder.

  >>> split_arg("task=fer,runlocal,name=x", ("task", "name"))
  ('task=fer,name=x', 'runlocal')
  """
  items = [i.strip() for i in (arg or "").split(",") if i.strip()]
  own = [i for i in items if i.split("=", 1)[0].strip() in keys]
  return ",".join(own), ",".join(i for i in items if i not in own)


def load_config(spec: str) -> ml_collections.ConfigDict:
  """Loads `path/to/config.py[:arg]` the way `--config` does (outside absl flags)."""
  import importlib.util
  import pathlib

  path, _, arg = spec.partition(":")
  file = pathlib.Path(path)
  if not file.exists():
    raise FileNotFoundError(f"config file {path!r} not found")
  module_spec = importlib.util.spec_from_file_location(f"_config_{file.stem}", file)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)
