"""Where a JAX train step's time goes, per XLA operation (XLA:CPU or an accelerator).

  taskset -c 1 python -m norface_jax.benchmark.profile --model=nor --variant=mu/8 \
      --image_size=64 --batch=16

Runs `launch/benchmark.py`'s JAX rows of one model (no PyTorch) with the profiler on for
a few extra train steps, and prints the step's time by kind of operation (convolutions,
matmuls, fusions of elementwise work, copies and transposes, ...) and its slowest
operations with their HLO. XLA_FLAGS given to this command apply (flag experiments).
"""

from __future__ import annotations

import collections
import re
from typing import Any

from absl import app, flags

from norface_jax.benchmark import common, run

_MODEL = flags.DEFINE_enum("model", "nor", list(run.MODELS), "Which network.")
_VARIANT = flags.DEFINE_string("variant", None, "ViT variant (deepfn: runlocal|paper|widths).")
_BATCH = flags.DEFINE_integer("batch", None, "Global batch.")
_SIZE = flags.DEFINE_integer("image_size", None, "Image side.")
_STEPS = flags.DEFINE_integer("steps", 3, "Profiled steps.")
_TOP = flags.DEFINE_integer("top", 12, "Slowest operations to list.")


def instructions(hlo: str) -> dict[str, tuple[str, str]]:
  """HLO instruction name -> (kind, its line), kinds from the opcode and, for fusions,
  from what the fused computation holds."""
  comps, current = {}, None
  for line in hlo.splitlines():
    head = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$", line)
    if head:
      current = comps.setdefault(head.group(1), [])
    elif current is not None:
      current.append(line)
  out = {}
  for line in hlo.splitlines():
    m = re.match(r"^\s*(?:ROOT )?%?([\w.\-]+) = \S+(?:\{[^}]*\})? ([\w\-]+)\(", line)
    if not m:
      m = re.match(r"^\s*(?:ROOT )?%?([\w.\-]+) = .*? ([\w\-]+)\(", line)
    if not m:
      continue
    name, opcode = m.group(1), m.group(2)
    kind = opcode
    if opcode == "fusion":
      called = re.search(r"calls=%?([\w.\-]+)", line)
      body = "\n".join(comps.get(called.group(1), [])) if called else ""
      kind = ("fusion: convolution" if " convolution(" in body else
              "fusion: dot" if " dot(" in body else
              "fusion: reduce" if " reduce(" in body or " reduce-window(" in body else
              "fusion: elementwise / data movement")
    elif opcode in ("copy", "transpose", "bitcast", "reshape", "broadcast", "slice",
                    "concatenate", "pad", "dynamic-slice", "dynamic-update-slice"):
      kind = "copy / layout"
    out[name] = (kind, line.strip())
  return out


def breakdown(profile: dict[str, Any], top: int) -> str:
  table = instructions(profile["hlo"])
  ops = profile["ops"]
  total = sum(ops.values()) or 1.0
  kinds = collections.Counter()
  for name, secs in ops.items():
    kinds[table.get(name, ("other",))[0]] += secs
  lines = [f"step: {1e3 * total:.1f} ms in {len(ops)} operations", "",
           "| kind | ms/step | share |", "| --- | --- | --- |"]
  lines += [f"| {k} | {1e3 * v:.1f} | {100 * v / total:.0f}% |" for k, v in kinds.most_common()]
  lines += ["", "| operation | kind | ms/step | share | HLO (shortened) |",
            "| --- | --- | --- | --- | --- |"]
  for name, secs in collections.Counter(ops).most_common(top):
    kind, line = table.get(name, ("other", ""))
    lines.append(f"| {name} | {kind} | {1e3 * secs:.1f} | {100 * secs / total:.0f}% | "
                 f"`{line[:140]}` |")
  return "\n".join(lines)


def main(argv):
  del argv
  mod = run.model_module(_MODEL.value)
  d = mod.DEFAULTS
  pick = lambda v, k: d[k] if v is None else v  # noqa: E731
  opts = common.Options(variant=pick(_VARIANT.value, "variant"), batch=pick(_BATCH.value, "batch"),
                        image_size=pick(_SIZE.value, "image_size"), warmup=1, windows=1,
                        steps_per_window=1)
  common.PROFILE["steps"] = _STEPS.value
  mod.jax_rows(mod.make_config(opts), opts)
  print(f"model={_MODEL.value} variant={opts.variant} image={opts.image_size} "
        f"batch={opts.batch}: the first timed train step\n")
  print(breakdown(common.PROFILE["out"][0], _TOP.value))


if __name__ == "__main__":
  app.run(main)
