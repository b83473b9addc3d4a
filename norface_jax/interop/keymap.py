"""Parameter-name mappings between the Flax networks and their PyTorch/timm twins.

Pure NumPy, both directions (the mapping itself is documented in
`norface_jax.models.vit`): `vit_to_torch` / `vit_from_torch` for the ViT (timm keys),
`moe_to_torch` for a MoE block (Flax paths as keys), `classifier_to_torch` for F_cla,
`deepfn_ae_{to,from}_torch` / `lenet_{to,from}_torch` for the DeepFN networks.
Shape letters: D width, H heads, Dh head width, P patch, C channels.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from norface_jax.models import vit as vit_lib

StateDict = dict[str, np.ndarray]


def _np(x) -> np.ndarray:
  return np.asarray(x, np.float32)


def _unscan(params: Mapping[str, Any]) -> Mapping[str, Any]:
  """Scan layout (`blocks` with a leading layer axis) -> `block_{i}`."""
  return vit_lib.unstack_block_params(params) if "blocks" in params else params


def vit_to_torch(params: Mapping[str, Any], image_size: int, prefix: str = "") -> StateDict:
  """Flax ViT params -> timm-named state_dict (with the sin-cos `pos_embed` buffer)."""
  params = _unscan(params)
  kernel = _np(params["patch_embed"]["kernel"])  # (P, P, C, D)
  d = kernel.shape[-1]
  p = kernel.shape[0]
  out = {
      "cls_token": _np(params["cls"]),
      "pos_embed": vit_lib.get_2d_sincos_pos_embed(d, (image_size // p,) * 2)[None],
      "patch_embed.proj.weight": kernel.transpose(3, 2, 0, 1),
      "patch_embed.proj.bias": _np(params["patch_embed"]["bias"]),
      "norm.weight": _np(params["norm"]["scale"]),
      "norm.bias": _np(params["norm"]["bias"]),
  }
  depth = sum(1 for k in params if k.startswith("block_"))
  for i in range(depth):
    blk, t = params[f"block_{i}"], f"blocks.{i}."
    qkv, proj = blk["attn"]["qkv"], blk["attn"]["proj"]
    out.update({
        t + "norm1.weight": _np(blk["norm1"]["scale"]), t + "norm1.bias": _np(blk["norm1"]["bias"]),
        t + "attn.qkv.weight": _np(qkv["kernel"]).reshape(d, 3 * d).T,
        t + "attn.qkv.bias": _np(qkv["bias"]).reshape(3 * d),
        t + "attn.proj.weight": _np(proj["kernel"]).reshape(d, d).T,
        t + "attn.proj.bias": _np(proj["bias"]),
        t + "norm2.weight": _np(blk["norm2"]["scale"]), t + "norm2.bias": _np(blk["norm2"]["bias"]),
        t + "mlp.fc1.weight": _np(blk["mlp"]["fc1"]["kernel"]).T,
        t + "mlp.fc1.bias": _np(blk["mlp"]["fc1"]["bias"]),
        t + "mlp.fc2.weight": _np(blk["mlp"]["fc2"]["kernel"]).T,
        t + "mlp.fc2.bias": _np(blk["mlp"]["fc2"]["bias"]),
    })
  return {prefix + k: np.array(v, np.float32, order="C") for k, v in out.items()}


def vit_from_torch(sd: Mapping[str, np.ndarray], num_heads: int) -> dict[str, Any]:
  """timm-named ViT tensors (no prefix; `pos_embed`, heads etc. already removed) -> Flax."""
  g = lambda k: _np(sd[k])
  w = g("patch_embed.proj.weight")  # (D, C, P, P)
  d = w.shape[0]
  dh = d // num_heads
  params = {
      "cls": g("cls_token").reshape(1, 1, d),
      "patch_embed": {"kernel": w.transpose(2, 3, 1, 0), "bias": g("patch_embed.proj.bias")},
      "norm": {"scale": g("norm.weight"), "bias": g("norm.bias")},
  }
  depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
  for i in range(depth):
    t = f"blocks.{i}."
    params[f"block_{i}"] = {
        "norm1": {"scale": g(t + "norm1.weight"), "bias": g(t + "norm1.bias")},
        "attn": {
            "qkv": {"kernel": g(t + "attn.qkv.weight").T.reshape(d, 3, num_heads, dh),
                    "bias": g(t + "attn.qkv.bias").reshape(3, num_heads, dh)},
            "proj": {"kernel": g(t + "attn.proj.weight").T.reshape(num_heads, dh, d),
                     "bias": g(t + "attn.proj.bias")},
        },
        "norm2": {"scale": g(t + "norm2.weight"), "bias": g(t + "norm2.bias")},
        "mlp": {"fc1": {"kernel": g(t + "mlp.fc1.weight").T, "bias": g(t + "mlp.fc1.bias")},
                "fc2": {"kernel": g(t + "mlp.fc2.weight").T, "bias": g(t + "mlp.fc2.bias")}},
    }
  return params


def _flatten(tree: Mapping[str, Any], prefix: str) -> StateDict:
  out = {}
  for k, v in tree.items():
    if isinstance(v, Mapping):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[prefix + k] = np.array(v, np.float32, order="C")
  return out


def moe_to_torch(params: Mapping[str, Any], prefix: str = "") -> StateDict:
  """MoE block params -> twin keys: Flax paths with `scale` renamed `weight` in the norm."""
  out = _flatten(params, prefix)
  if prefix + "norm.scale" in out:
    out[prefix + "norm.weight"] = out.pop(prefix + "norm.scale")
  return out


def classifier_to_torch(params: Mapping[str, Any], image_size: int) -> StateDict:
  """F_cla params -> `torch_twins.NorfaceClassifier` state_dict."""
  out = vit_to_torch(params["encoder"], image_size, prefix="encoder.")
  for name, sub in params.items():
    if name.startswith("input_moe_") or name == "output_moe":
      out.update(moe_to_torch(sub, prefix=f"{name}."))
  out["head.weight"] = np.array(_np(params["head"]["kernel"]).T, order="C")
  out["head.bias"] = np.array(params["head"]["bias"], np.float32)
  unknown = set(params) - {"encoder", "head", "output_moe"} - {
      k for k in params if k.startswith("input_moe_")}
  if unknown:
    raise KeyError(f"F_cla params with no PyTorch mapping: {sorted(unknown)}")
  return out


# ----------------------------------------------------------------------------------------
# DeepFN: the autoencoder and LeNet-5 (`norface_jax.torch_twins.deepfn`). Twin keys are
# the Flax paths joined by "." (`encoder.conv_0.weight`). Conv kernels HWIO -> OIHW,
# Dense (in, out) -> Linear (out, in); a Dense after a flatten (or before a reshape) has
# its input rows (output columns) permuted from Flax's (H, W, C) order to PyTorch's
# (C, H, W), so the twins flatten and reshape as plain PyTorch does.

def _square(n: int, c: int) -> int:
  side = int(round((n // c) ** 0.5))
  if side * side * c != n:
    raise ValueError(f"{n} features are not a square grid of {c} channels")
  return side


def _layer_to_torch(kernel, bias, hwc_in: int = 0, hwc_out: int = 0):
  k, b = _np(kernel), _np(bias)
  if k.ndim == 4:
    return k.transpose(3, 2, 0, 1), b  # HWIO -> OIHW.
  if hwc_in:  # (H*W*C, out) -> (out, C*H*W).
    s = _square(k.shape[0], hwc_in)
    return k.reshape(s, s, hwc_in, -1).transpose(3, 2, 0, 1).reshape(k.shape[1], -1), b
  if hwc_out:  # (in, H*W*C) -> (C*H*W, in).
    s = _square(k.shape[1], hwc_out)
    return (k.reshape(-1, s, s, hwc_out).transpose(3, 1, 2, 0).reshape(k.shape[1], -1),
            b.reshape(s, s, hwc_out).transpose(2, 0, 1).reshape(-1))
  return k.T, b


def _layer_from_torch(weight, bias, hwc_in: int = 0, hwc_out: int = 0):
  w, b = _np(weight), _np(bias)
  if w.ndim == 4:
    return w.transpose(2, 3, 1, 0), b  # OIHW -> HWIO.
  if hwc_in:
    s = _square(w.shape[1], hwc_in)
    return w.reshape(-1, hwc_in, s, s).transpose(2, 3, 1, 0).reshape(w.shape[1], -1), b
  if hwc_out:
    s = _square(w.shape[0], hwc_out)
    return (w.reshape(hwc_out, s, s, -1).transpose(3, 1, 2, 0).reshape(w.shape[1], -1),
            b.reshape(hwc_out, s, s).transpose(1, 2, 0).reshape(-1))
  return w.T, b


def _layers_to_torch(params: Mapping[str, Any], hwc_in: Mapping[str, int],
                     hwc_out: Mapping[str, int], prefix: str = "") -> StateDict:
  out = {}
  for name, sub in params.items():
    path = prefix + name
    if "kernel" in sub:
      w, b = _layer_to_torch(sub["kernel"], sub["bias"], hwc_in.get(path, 0),
                             hwc_out.get(path, 0))
      out[path + ".weight"] = np.array(w, np.float32, order="C")
      out[path + ".bias"] = np.array(b, np.float32, order="C")
    else:
      out.update(_layers_to_torch(sub, hwc_in, hwc_out, path + "."))
  return out


def _layers_from_torch(sd: Mapping[str, Any], hwc_in: Mapping[str, int],
                       hwc_out: Mapping[str, int]) -> dict[str, Any]:
  params: dict[str, Any] = {}
  for key in sd:
    if not key.endswith(".weight"):
      if not key.endswith(".bias"):
        raise KeyError(f"unexpected key {key!r}")
      continue
    path = key[:-len(".weight")]
    k, b = _layer_from_torch(sd[key], sd[path + ".bias"], hwc_in.get(path, 0),
                             hwc_out.get(path, 0))
    node = params
    for part in path.split(".")[:-1]:
      node = node.setdefault(part, {})
    node[path.split(".")[-1]] = {"kernel": k, "bias": b}
  return params


def _ae_flatten_channels(c: int) -> dict[str, dict[str, int]]:
  """The Dense layers next to the encoder's flatten / reshape, with their channels C."""
  return {"hwc_in": {"encoder.dense_latent": c}, "hwc_out": {"encoder.dense_project": c}}


def deepfn_ae_to_torch(params: Mapping[str, Any]) -> StateDict:
  """DeepFN AutoEncoder params {encoder, decoder_x, decoder_y} -> `DeepFNAutoEncoder` keys."""
  c = int(np.shape(params["encoder"]["upscale"]["conv"]["kernel"])[2])  # widths[-1].
  return _layers_to_torch(params, **_ae_flatten_channels(c))


def deepfn_ae_from_torch(sd: Mapping[str, Any]) -> dict[str, Any]:
  """`DeepFNAutoEncoder` state_dict -> Flax AutoEncoder params."""
  c = int(np.shape(sd["encoder.upscale.conv.weight"])[1])  # widths[-1].
  return _layers_from_torch(sd, **_ae_flatten_channels(c))


def lenet_to_torch(params: Mapping[str, Any]) -> StateDict:
  """LeNet-5 params {conv_0, conv_1, dense_0, dense_1, head} -> twin `LeNet5` keys."""
  c = int(np.shape(params["conv_1"]["kernel"])[-1])
  return _layers_to_torch(params, {"dense_0": c}, {})


def lenet_from_torch(sd: Mapping[str, Any]) -> dict[str, Any]:
  """Twin `LeNet5` state_dict -> Flax LeNet-5 params."""
  return _layers_from_torch(sd, {"dense_0": int(np.shape(sd["conv_1.weight"])[0])}, {})
