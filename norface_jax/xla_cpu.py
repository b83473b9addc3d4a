"""The XLA:CPU flags this project runs with by default: the one place they are set.

Measured on the train steps (docs/benchmarks.md, `python -m norface_jax.benchmark.cpu_flags`):
with `--xla_cpu_experimental_ynn_fusion_type=-individual_dot` XLA:CPU runs single dots
through its own (Eigen) kernels instead of one YNNPACK fusion each, which the stage-2
ViT step ran faster with in every paired run (1.02x-1.10x at one thread, 1.05x at two)
and the stage-1 step at par at one thread and 1.15x faster at two.
XLA reads `XLA_FLAGS` once, when JAX's CPU backend starts, so `apply()` runs when
`norface_jax` is imported (before any launch script touches a device) and appends only
the flags the user has not set (`NORFACE_XLA_CPU_DEFAULTS=0` leaves XLA_FLAGS alone).
Other platforms ignore these flags.
"""

from __future__ import annotations

import os
from typing import MutableMapping

DEFAULTS = ("--xla_cpu_experimental_ynn_fusion_type=-individual_dot",)


def apply(environ: MutableMapping[str, str] = os.environ) -> str:
  """Adds each of `DEFAULTS` to `environ["XLA_FLAGS"]` unless that flag is given already;
  returns the resulting value."""
  flags = environ.get("XLA_FLAGS", "")
  if environ.get("NORFACE_XLA_CPU_DEFAULTS", "1") == "0":
    return flags
  given = {f.split("=", 1)[0] for f in flags.split()}
  extra = [f for f in DEFAULTS if f.split("=", 1)[0] not in given]
  if extra:
    environ["XLA_FLAGS"] = " ".join([flags, *extra]).strip()
  return environ.get("XLA_FLAGS", "")
