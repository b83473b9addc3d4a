"""Exports a trained workdir to PyTorch: `model.safetensors`, `model.pt`, `architecture.json`.

The network is chosen by the workdir's `config.stage` (`exportable.for_stage`); DeepFN's
networks, saved by its protocol runner, go through `export_deepfn` / `export_params`. The
state_dict loads into the named twin of `norface_jax.torch_twins` with `strict=True`;
with `verify=True` (the default) the export also runs the Flax network and the twin on
random inputs and records the largest relative difference in the JSON.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
from absl import logging

from norface_jax.interop import exportable


def save_state_dict(state_dict: dict[str, np.ndarray], out: str) -> None:
  """Writes `model.safetensors` and `model.pt` (a plain `state_dict`)."""
  import safetensors.numpy
  import torch
  os.makedirs(out, exist_ok=True)
  safetensors.numpy.save_file(state_dict, os.path.join(out, "model.safetensors"))
  torch.save({k: torch.from_numpy(v) for k, v in state_dict.items()}, os.path.join(out, "model.pt"))


def _flat(out) -> np.ndarray:
  """One array from a network output or a tuple of them (torch or NumPy)."""
  outs = out if isinstance(out, (tuple, list)) else (out,)
  return np.concatenate([np.ravel(np.asarray(o)) for o in outs])


def parity(spec: exportable.Exportable, restored: exportable.Restored,
           state_dict: dict[str, np.ndarray], batch: int = 2, seed: int = 0) -> dict[str, float]:
  """Max |torch - jax| / max |jax| of the twin (strict load, eval mode) on random inputs."""
  import torch
  from norface_jax import torch_twins
  twin = torch_twins.TWINS[spec.twin_class](**restored.kwargs).eval()
  twin.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict.items()}, strict=True)
  rng = np.random.default_rng(seed)
  s, c = restored.image_size, restored.channels
  images = [rng.standard_normal((batch, s, s, c)).astype(np.float32) for _ in restored.inputs]
  ref = _flat(restored.apply(*images))
  with torch.no_grad():
    out = _flat(twin(*[torch.from_numpy(x.transpose(0, 3, 1, 2).copy()) for x in images]))
  err = float(np.max(np.abs(out - ref)) / max(np.max(np.abs(ref)), 1e-30))
  return {"max_rel_err": err, "max_abs_err": float(np.max(np.abs(out - ref))), "batch": batch}


def export_workdir(workdir: str, out: str, *, step: int | None = None, which: str = "latest",
                   verify: bool = True) -> dict[str, Any]:
  """Exports the network of `workdir` into `out`; returns the architecture dict."""
  from norface_jax.training import workdir as workdir_lib
  workdir = os.path.abspath(os.path.expanduser(workdir))
  config = workdir_lib.load_config(workdir)
  spec = exportable.for_stage(config.get("stage", "cla"))
  restored = spec.restore(config, workdir, which if step is None else "latest", step)
  state_dict = spec.state_dict(restored)
  save_state_dict(state_dict, out)
  arch = {
      "network": spec.name, "class": spec.twin_class, "kwargs": restored.kwargs,
      "inputs": list(restored.inputs), "input_layout": "NCHW float32",
      "preprocess": restored.preprocess, "image_size": restored.image_size,
      "workdir": workdir, "step": restored.step, "stage": config.get("stage", "cla"),
  }
  if verify:
    arch["parity"] = parity(spec, restored, state_dict)
    logging.info("Export parity (PyTorch twin vs Flax): %s", arch["parity"])
  with open(os.path.join(out, "architecture.json"), "w") as f:
    json.dump(arch, f, indent=2)
  logging.info("Exported %s (step %d, %d tensors) from %s to %s.", spec.name, restored.step,
               len(state_dict), workdir, out)
  return arch


def export_params(name: str, params: Any, kwargs: dict[str, Any], out: str, *,
                  verify: bool = True, preprocess: dict[str, Any] | None = None,
                  extra: dict[str, Any] | None = None) -> dict[str, Any]:
  """Exports Flax `params` of the registered network `name` into `out`.

  For networks trained outside a workdir (DeepFN). `kwargs` are the twin's constructor
  arguments; `preprocess` adds to the network's own input description.
  """
  spec = exportable.EXPORTABLES[name]
  if spec.from_params is None:
    raise ValueError(f"network {name!r} is exported from a workdir (export_workdir)")
  restored = spec.from_params(params, kwargs)
  state_dict = spec.state_dict(restored)
  save_state_dict(state_dict, out)
  arch = {
      "network": spec.name, "class": spec.twin_class, "kwargs": restored.kwargs,
      "inputs": list(restored.inputs), "input_layout": "NCHW float32",
      "preprocess": {**restored.preprocess, **(preprocess or {})},
      "image_size": restored.image_size, **(extra or {}),
  }
  if verify:
    arch["parity"] = parity(spec, restored, state_dict)
    logging.info("Export parity (PyTorch twin vs Flax): %s", arch["parity"])
  with open(os.path.join(out, "architecture.json"), "w") as f:
    json.dump(arch, f, indent=2)
  logging.info("Exported %s (%d tensors) to %s.", spec.name, len(state_dict), out)
  return arch


def export_deepfn(path: str, out: str, *, verify: bool = True) -> dict[str, Any]:
  """Exports a DeepFN network saved by the protocol runner (`W/params/NAME.msgpack`)."""
  from norface_jax.deepfn import saved
  path = os.path.abspath(os.path.expanduser(path))
  params, record = saved.load(path)
  extra = {"source": path, "record": {k: v for k, v in record.items()
                                      if k not in ("network", "kwargs")}}
  return export_params(record["network"], params, record["kwargs"], out, verify=verify,
                       preprocess=record.get("preprocess"), extra=extra)
