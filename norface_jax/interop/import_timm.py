"""Imports a timm/MAE-style PyTorch ViT checkpoint into the Flax ViT (`models.vit`).

Reads `checkpoint["model"]` (MAE), `checkpoint["state_dict"]` or a bare state_dict
(`.pth`/`.pt` or `.safetensors`) with timm keys (`patch_embed.proj.weight`,
`blocks.0.attn.qkv.weight`, `norm.weight`, ...). MAE pre-training keys (`decoder_*`,
`mask_token`) and classifier heads (`head.*`) are dropped with a log line; a
fine-tuned global-pool checkpoint's `fc_norm` is used as `norm` when `norm` is absent.

Position embeddings: our ViT uses MAE's fixed 2-D sin-cos table, recomputed for any
grid, so a sin-cos checkpoint works at any resolution (divisible by the patch size) with
nothing to interpolate. A checkpoint's `pos_embed` is compared with the sin-cos table
of its own grid; a learned table (timm supervised ViTs) cannot be represented and is
dropped with a warning that states the difference (see docs/interop.md).

`write_init_checkpoint` writes the encoder as an Orbax checkpoint whose `state` item is
`{'params': {'encoder': ...}}`: the form `config.init_from=<out>/checkpoints` with
`init_from_key='encoder'` expects (stage 2 and MAE pre-training).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
from absl import logging

from norface_jax.interop import keymap
from norface_jax.models import vit as vit_lib

_DROPPED = re.compile(r"^(decoder_|decoder\.|mask_token|head\.|head_dist\.|fc_norm\.)")


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """Tensors of a checkpoint file as float32 NumPy, unwrapping `model` / `state_dict`.

  `.pth`/`.pt` files are unpickled (MAE's carry an argparse Namespace): load only
  checkpoints you trust.
  """
  if path.endswith(".safetensors"):
    import safetensors.numpy
    return dict(safetensors.numpy.load_file(path))
  import torch
  ckpt = torch.load(path, map_location="cpu", weights_only=False)
  for key in ("model", "state_dict"):
    if isinstance(ckpt, Mapping) and key in ckpt and isinstance(ckpt[key], Mapping):
      logging.info("Reading checkpoint[%r] of %s.", key, path)
      ckpt = ckpt[key]
      break
  return {k: v.detach().float().numpy() for k, v in ckpt.items() if hasattr(v, "detach")}


def infer_variant(state_dict: Mapping[str, np.ndarray]) -> str:
  """`"B/16"`-style name from the tensor shapes (width, depth and patch size)."""
  w = state_dict["patch_embed.proj.weight"]
  width, patch = w.shape[0], w.shape[-1]
  depth = 1 + max(int(k.split(".")[1]) for k in state_dict if k.startswith("blocks."))
  for name, (d, l, _) in vit_lib._VARIANTS.items():  # pylint: disable=protected-access
    if (d, l) == (width, depth):
      return f"{name}/{patch}"
  raise ValueError(f"no ViT variant with width {width} and depth {depth}; pass --variant")


def check_pos_embed(pos_embed: np.ndarray, width: int, tol: float = 1e-4) -> dict[str, Any]:
  """Compares a checkpoint's `pos_embed` (1, [1 +] n, D) with the sin-cos table of its grid."""
  table = pos_embed.reshape(-1, width)
  n = table.shape[0]
  has_cls = int(round(np.sqrt(n - 1))) ** 2 == n - 1
  grid = int(round(np.sqrt(n - 1 if has_cls else n)))
  ref = vit_lib.get_2d_sincos_pos_embed(width, (grid, grid), cls_token=has_cls)
  diff = float(np.max(np.abs(table - ref))) if ref.shape == table.shape else float("inf")
  info = {"grid": grid, "max_abs_diff_to_sincos": diff, "sincos": diff < tol}
  if info["sincos"]:
    logging.info("pos_embed is the fixed %dx%d sin-cos table (max diff %.2e): recomputed "
                 "for any resolution.", grid, grid, diff)
  else:
    logging.warning("pos_embed (%dx%d grid) is NOT the sin-cos table (max diff %.3g): a "
                    "learned table, which this ViT cannot hold; it is dropped and the "
                    "sin-cos table used instead (fine-tune to adapt).", grid, grid, diff)
  return info


def convert(state_dict: Mapping[str, np.ndarray], *, variant: str = "",
            image_size: int = 0, scan: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
  """timm/MAE tensors -> (Flax ViT params, info). Unknown keys are an error."""
  sd = {re.sub(r"^(module\.|backbone\.)", "", k): np.asarray(v, np.float32)
        for k, v in state_dict.items()}
  if "norm.weight" not in sd and "fc_norm.weight" in sd:
    logging.warning("No `norm`: using the global-pool `fc_norm` as the final norm (the "
                    "checkpoint pooled before the norm; use pool='gap').")
    sd["norm.weight"], sd["norm.bias"] = sd.pop("fc_norm.weight"), sd.pop("fc_norm.bias")
  dropped = sorted(k for k in sd if _DROPPED.match(k))
  if dropped:
    logging.info("Ignoring %d keys not part of the encoder: %s", len(dropped),
                 sorted({k.split(".")[0] for k in dropped}))
  sd = {k: v for k, v in sd.items() if k not in dropped}
  variant = variant or infer_variant(sd)
  cfg = vit_lib.decode_variant(variant)
  info: dict[str, Any] = {"variant": variant, "dropped": dropped}
  if "pos_embed" in sd:
    info["pos_embed"] = check_pos_embed(sd.pop("pos_embed"), cfg["width"])
  if image_size:
    if image_size % cfg["patch_size"]:
      raise ValueError(f"image_size {image_size} not divisible by patch {cfg['patch_size']}")
    info["image_size"] = image_size
  params = keymap.vit_from_torch(sd, cfg["num_heads"])
  used = set(keymap.vit_to_torch(params, cfg["patch_size"])) - {"pos_embed"}
  unknown = sorted(set(sd) - used)
  if unknown:
    raise KeyError(f"checkpoint keys with no place in the ViT: {unknown[:8]}")
  if scan:
    params = vit_lib.stack_block_params(params, cfg["depth"])
  return params, info


def write_init_checkpoint(params: Mapping[str, Any], out: str,
                          info: Mapping[str, Any] | None = None) -> str:
  """Writes `<out>/checkpoints/0` holding state {'params': {'encoder': params}}; returns
  the directory to give as `config.init_from`."""
  import orbax.checkpoint as ocp
  directory = os.path.join(os.path.abspath(out), "checkpoints")
  mgr = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(create=True))
  mgr.save(0, args=ocp.args.Composite(
      state=ocp.args.StandardSave({"params": {"encoder": dict(params)}})))
  mgr.wait_until_finished()
  mgr.close()
  if info is not None:
    with open(os.path.join(out, "import.json"), "w") as f:
      json.dump(dict(info), f, indent=2, default=str)
  logging.info("Wrote the imported encoder to %s (use config.init_from=%s).", directory, directory)
  return directory
