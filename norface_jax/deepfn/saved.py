"""Trained DeepFN networks on disk: `NAME.msgpack` (Flax params) + `NAME.json` (a record).

The protocol runner trains many small networks (one autoencoder per person, one LeNet-5
per split and input kind) and, with `config.save_params`, writes each one here under
`<workdir>/params/`. The JSON record names the network (`deepfn_ae` | `deepfn_lenet`),
the constructor arguments of its PyTorch twin (`kwargs`) and where it came from; it is
what `launch/export_torch.py --deepfn=NAME.msgpack` reads.
"""

from __future__ import annotations

import json
import os
from typing import Any

import flax.serialization
import jax
import numpy as np

NETWORKS = ("deepfn_ae", "deepfn_lenet")


def save(stem: str, network: str, params: Any, kwargs: dict[str, Any], **meta: Any) -> str:
  """Writes `stem.msgpack` and `stem.json`; returns the `.msgpack` path."""
  if network not in NETWORKS:
    raise ValueError(f"network {network!r}; expected one of {NETWORKS}")
  os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
  host = jax.tree.map(lambda a: np.asarray(a, np.float32), jax.device_get(params))
  with open(stem + ".msgpack", "wb") as f:
    f.write(flax.serialization.msgpack_serialize(host))
  with open(stem + ".json", "w") as f:
    json.dump({"network": network, "kwargs": kwargs, **meta}, f, indent=1)
  return stem + ".msgpack"


def load(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
  """(params, record) from `NAME.msgpack` (or `NAME.json` / `NAME`)."""
  stem = os.path.splitext(path)[0] if path.endswith((".msgpack", ".json")) else path
  for p in (stem + ".msgpack", stem + ".json"):
    if not os.path.exists(p):
      raise FileNotFoundError(f"{p} not found (DeepFN params are saved as NAME.msgpack + "
                              "NAME.json by the protocol runner with config.save_params)")
  with open(stem + ".msgpack", "rb") as f:
    params = flax.serialization.msgpack_restore(f.read())
  with open(stem + ".json") as f:
    record = json.load(f)
  return params, record
