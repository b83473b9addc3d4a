"""Imports a timm/MAE-style PyTorch ViT checkpoint into the Flax ViT (`models.vit`).

Reads `checkpoint["model"]` (MAE), `checkpoint["state_dict"]` or a bare state_dict
(`.pth`/`.pt` or `.safetensors`) with timm keys (`patch_embed.proj.weight`,
`blocks.0.attn.qkv.weight`, `norm.weight`, ...). MAE pre-training keys (`decoder_*`,
`mask_token`) and classifier heads (`head.*`) are dropped with a log line; a
fine-tuned global-pool checkpoint's `fc_norm` is used as `norm` when `norm` is absent.

Position embeddings: our ViT uses MAE's fixed 2-D sin-cos table by default, recomputed
for any grid, so a sin-cos checkpoint works at any resolution (divisible by the patch
size) with nothing to interpolate. A checkpoint's `pos_embed` is compared with the
sin-cos table of its own grid; a learned table (timm supervised ViTs) is kept as the
ViT's `pos_embedding` parameter (for `ViT(pos_embed="learned")`, stage 2's
`config.model.pos_embed="learned"`), resampled to `image_size` when one is given, as
timm's `resample_abs_pos_embed` does (see docs/interop.md).

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
  info = {"grid": grid, "max_abs_diff_to_sincos": diff, "sincos": diff < tol,
          "cls_row": bool(has_cls)}
  if info["sincos"]:
    logging.info("pos_embed is the fixed %dx%d sin-cos table (max diff %.2e): recomputed "
                 "for any resolution.", grid, grid, diff)
  else:
    logging.info("pos_embed (%dx%d grid) is NOT the sin-cos table (max diff %.3g): a "
                 "learned table.", grid, grid, diff)
  return info


def learned_pos_embedding(pos_embed: np.ndarray, width: int,
                          grid: int = 0) -> np.ndarray:
  """A checkpoint's `pos_embed` -> the ViT's `pos_embedding` (1, 1 + g*g, D).

  A table without a cls row (timm `no_embed_class`) gets a zero one (the same model);
  `grid` > 0 resamples the patch rows to grid x grid (`vit.resample_pos_embed`).
  """
  table = np.asarray(pos_embed, np.float32).reshape(1, -1, width)
  n = table.shape[1]
  if int(round(np.sqrt(n))) ** 2 == n:  # No cls row.
    table = np.concatenate([np.zeros((1, 1, width), np.float32), table], axis=1)
  if grid:
    table = vit_lib.resample_pos_embed(table, (grid, grid))
  return np.ascontiguousarray(table, np.float32)


def convert(state_dict: Mapping[str, np.ndarray], *, variant: str = "",
            image_size: int = 0, scan: bool = False,
            pos_embed: str = "auto") -> tuple[dict[str, Any], dict[str, Any]]:
  """timm/MAE tensors -> (Flax ViT params, info). Unknown keys are an error.

  `pos_embed`: "auto" keeps a learned table as `pos_embedding` and drops a sin-cos one
  (the ViT computes it); "learned" always keeps it, "sincos" always drops it. A kept
  table is resampled to the `image_size` grid when `image_size` is given; `info
  ["pos_embed_mode"]` is the `ViT.pos_embed` (`config.model.pos_embed`) to train with.
  """
  if pos_embed not in ("auto", "learned", "sincos"):
    raise ValueError(f"pos_embed={pos_embed!r}; expected auto, learned or sincos")
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
  table = sd.pop("pos_embed", None)
  keep = False
  if table is not None:
    info["pos_embed"] = check_pos_embed(table, cfg["width"])
    keep = pos_embed == "learned" or (pos_embed == "auto" and not info["pos_embed"]["sincos"])
  elif pos_embed == "learned":
    raise KeyError("pos_embed='learned' but the checkpoint has no `pos_embed`")
  info["pos_embed_mode"] = "learned" if keep else "sincos"
  if image_size:
    if image_size % cfg["patch_size"]:
      raise ValueError(f"image_size {image_size} not divisible by patch {cfg['patch_size']}")
    info["image_size"] = image_size
  params = keymap.vit_from_torch(sd, cfg["num_heads"])
  used = set(keymap.vit_to_torch(params, cfg["patch_size"])) - {"pos_embed"}
  unknown = sorted(set(sd) - used)
  if unknown:
    raise KeyError(f"checkpoint keys with no place in the ViT: {unknown[:8]}")
  if keep:
    grid = image_size // cfg["patch_size"] if image_size else 0
    params["pos_embedding"] = learned_pos_embedding(table, cfg["width"], grid)
    g = int(round(np.sqrt(params["pos_embedding"].shape[1] - 1)))
    info["pos_embed"].update(kept=True, pos_embedding_grid=g)
    logging.warning("Keeping the learned pos_embed as `pos_embedding` for a %dx%d grid "
                    "(%d px at patch %d): train with config.model.pos_embed='learned' at "
                    "that image size.", g, g, g * cfg["patch_size"], cfg["patch_size"])
  elif table is not None and not info["pos_embed"]["sincos"]:
    info["pos_embed"]["kept"] = False
    logging.warning("Dropping the learned pos_embed (pos_embed='sincos'): the sin-cos "
                    "table is used instead (fine-tune to adapt).")
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
