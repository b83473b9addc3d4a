"""Parameter-name mappings between the Flax networks and their PyTorch/timm twins.

Pure NumPy, both directions (the mapping itself is documented in
`norface_jax.models.vit`): `vit_to_torch` / `vit_from_torch` for the ViT (timm keys),
`moe_to_torch` for a MoE block (Flax paths as keys), `classifier_to_torch` for F_cla,
`normalizer_{to,from}_torch` for F_nor,
`deepfn_ae_{to,from}_torch` / `lenet_{to,from}_torch` for the DeepFN networks,
`discriminator_to_torch` for D_res and `mae_to_torch` for the MAE (the benchmark's
twins; `interop.torch_perception` maps the perception networks).
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


def _attention_to_torch(attn: Mapping[str, Any], prefix: str) -> StateDict:
  """Fused q/k/v `qkv` (D, 3, H, Dh) and `proj` (H, Dh, D) -> nn.Linear weights."""
  qkv, proj = attn["qkv"], attn["proj"]
  d = _np(proj["bias"]).shape[0]
  return {prefix + "qkv.weight": _np(qkv["kernel"]).reshape(d, 3 * d).T,
          prefix + "qkv.bias": _np(qkv["bias"]).reshape(3 * d),
          prefix + "proj.weight": _np(proj["kernel"]).reshape(d, d).T,
          prefix + "proj.bias": _np(proj["bias"])}


def _attention_from_torch(g, prefix: str, num_heads: int) -> dict[str, Any]:
  w = g(prefix + "proj.weight")
  d = w.shape[0]
  dh = d // num_heads
  return {"qkv": {"kernel": g(prefix + "qkv.weight").T.reshape(d, 3, num_heads, dh),
                  "bias": g(prefix + "qkv.bias").reshape(3, num_heads, dh)},
          "proj": {"kernel": w.T.reshape(num_heads, dh, d), "bias": g(prefix + "proj.bias")}}


def _norm_to_torch(norm: Mapping[str, Any], prefix: str) -> StateDict:
  return {prefix + "weight": _np(norm["scale"]), prefix + "bias": _np(norm["bias"])}


def _mlp_to_torch(mlp: Mapping[str, Any], prefix: str) -> StateDict:
  out = {}
  for fc in ("fc1", "fc2"):
    out[f"{prefix}{fc}.weight"] = _np(mlp[fc]["kernel"]).T
    out[f"{prefix}{fc}.bias"] = _np(mlp[fc]["bias"])
  return out


def _block_to_torch(blk: Mapping[str, Any], prefix: str) -> StateDict:
  """A `vit.Block` -> timm's `blocks.{i}.` keys under `prefix`."""
  return {**_norm_to_torch(blk["norm1"], prefix + "norm1."),
          **_attention_to_torch(blk["attn"], prefix + "attn."),
          **_norm_to_torch(blk["norm2"], prefix + "norm2."),
          **_mlp_to_torch(blk["mlp"], prefix + "mlp.")}


def _block_from_torch(g, prefix: str, num_heads: int) -> dict[str, Any]:
  norm = lambda t: {"scale": g(t + "weight"), "bias": g(t + "bias")}
  fc = lambda t: {"kernel": g(t + "weight").T, "bias": g(t + "bias")}
  return {"norm1": norm(prefix + "norm1."),
          "attn": _attention_from_torch(g, prefix + "attn.", num_heads),
          "norm2": norm(prefix + "norm2."),
          "mlp": {"fc1": fc(prefix + "mlp.fc1."), "fc2": fc(prefix + "mlp.fc2.")}}


def vit_to_torch(params: Mapping[str, Any], image_size: int, prefix: str = "") -> StateDict:
  """Flax ViT params -> timm-named state_dict.

  `pos_embed` is the sin-cos buffer for `image_size`, or the learned `pos_embedding`
  (resampled to the `image_size` grid if it was made for another).
  """
  params = _unscan(params)
  kernel = _np(params["patch_embed"]["kernel"])  # (P, P, C, D)
  d = kernel.shape[-1]
  p = kernel.shape[0]
  grid = (image_size // p,) * 2
  if "pos_embedding" in params:
    pos = vit_lib.resample_pos_embed(_np(params["pos_embedding"]), grid)
  else:
    pos = vit_lib.get_2d_sincos_pos_embed(d, grid)[None]
  out = {
      "cls_token": _np(params["cls"]),
      "pos_embed": pos,
      "patch_embed.proj.weight": kernel.transpose(3, 2, 0, 1),
      "patch_embed.proj.bias": _np(params["patch_embed"]["bias"]),
      "norm.weight": _np(params["norm"]["scale"]),
      "norm.bias": _np(params["norm"]["bias"]),
  }
  depth = sum(1 for k in params if k.startswith("block_"))
  for i in range(depth):
    out.update(_block_to_torch(params[f"block_{i}"], f"blocks.{i}."))
  return {prefix + k: np.array(v, np.float32, order="C") for k, v in out.items()}


def vit_from_torch(sd: Mapping[str, np.ndarray], num_heads: int,
                   pos_embed: str = "sincos") -> dict[str, Any]:
  """timm-named ViT tensors (no prefix; heads etc. already removed) -> Flax.

  `pos_embed="learned"` keeps `pos_embed` (1, 1 + G*G, D) as `pos_embedding`; with
  "sincos" it is ignored (the Flax ViT computes its table).
  """
  g = lambda k: _np(sd[k])
  w = g("patch_embed.proj.weight")  # (D, C, P, P)
  d = w.shape[0]
  params = {
      "cls": g("cls_token").reshape(1, 1, d),
      "patch_embed": {"kernel": w.transpose(2, 3, 1, 0), "bias": g("patch_embed.proj.bias")},
      "norm": {"scale": g("norm.weight"), "bias": g("norm.bias")},
  }
  if pos_embed == "learned":
    params["pos_embedding"] = g("pos_embed").reshape(1, -1, d)
  depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
  for i in range(depth):
    params[f"block_{i}"] = _block_from_torch(g, f"blocks.{i}.", num_heads)
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


# ----------------------------------------------------------------------------------------
# F_nor (`norface_jax.torch_twins.normalizer`): the encoder with timm keys under
# `encoder.`; the EMM's fused attention as nn.Linear `emm.qkv` / `emm.proj`, its
# `emm.norm_fu`, `emm.mlp_fu.fc{1,2}`, timm blocks `emm.blocks.{i}.` and `emm.norm`; the
# decoder convs under their Flax names (`decoder.up0_conv1.weight`, OIHW).

def normalizer_to_torch(params: Mapping[str, Any], image_size: int) -> StateDict:
  """F_nor params {encoder, emm, decoder} -> `torch_twins.NorfaceNormalizer` state_dict."""
  unknown = set(params) - {"encoder", "emm", "decoder"}
  if unknown:
    raise KeyError(f"F_nor params with no PyTorch mapping: {sorted(unknown)}")
  out = vit_to_torch(params["encoder"], image_size, prefix="encoder.")
  emm = params["emm"]
  depth = sum(1 for k in emm if k.startswith("block_"))
  unknown = set(emm) - {"qkv", "proj", "norm_fu", "mlp_fu", "norm"} - {
      f"block_{i}" for i in range(depth)}
  if unknown:
    raise KeyError(f"EMM params with no PyTorch mapping: {sorted(unknown)}")
  emm_sd = {**_attention_to_torch(emm, "emm."),
            **_norm_to_torch(emm["norm_fu"], "emm.norm_fu."),
            **_mlp_to_torch(emm["mlp_fu"], "emm.mlp_fu."),
            **_norm_to_torch(emm["norm"], "emm.norm.")}
  for i in range(depth):
    emm_sd.update(_block_to_torch(emm[f"block_{i}"], f"emm.blocks.{i}."))
  out.update({k: np.array(v, np.float32, order="C") for k, v in emm_sd.items()})
  out.update(_layers_to_torch(params["decoder"], {}, {}, "decoder."))
  return out


def normalizer_from_torch(sd: Mapping[str, Any], num_heads: int) -> dict[str, Any]:
  """`NorfaceNormalizer` state_dict -> Flax F_nor params."""
  sub = lambda prefix: {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
  g = lambda k: _np(sd[k])
  emm = _attention_from_torch(g, "emm.", num_heads)
  emm["norm_fu"] = {"scale": g("emm.norm_fu.weight"), "bias": g("emm.norm_fu.bias")}
  emm["mlp_fu"] = {fc: {"kernel": g(f"emm.mlp_fu.{fc}.weight").T,
                        "bias": g(f"emm.mlp_fu.{fc}.bias")} for fc in ("fc1", "fc2")}
  emm["norm"] = {"scale": g("emm.norm.weight"), "bias": g("emm.norm.bias")}
  blocks = {int(k.split(".")[2]) for k in sd if k.startswith("emm.blocks.")}
  for i in sorted(blocks):
    emm[f"block_{i}"] = _block_from_torch(g, f"emm.blocks.{i}.", num_heads)
  return {"encoder": vit_from_torch(sub("encoder."), num_heads), "emm": emm,
          "decoder": _layers_from_torch(sub("decoder."), {}, {})}


# ----------------------------------------------------------------------------------------
# D_res (`torch_twins.discriminator`): convs under their Flax names per scale
# (`scale0.conv1.weight`, OIHW). The MAE (`torch_twins.mae`): the encoder with timm keys
# under `encoder.`, the decoder's Dense layers as nn.Linear, timm blocks
# `decoder_blocks.{i}.`, `decoder_norm`, `mask_token`.

def discriminator_to_torch(params: Mapping[str, Any]) -> StateDict:
  """D_res params {scale{s}: {conv{i}, logits}} -> `MultiScaleDiscriminator` state_dict."""
  unknown = [k for k in params if not k.startswith("scale")]
  if unknown:
    raise KeyError(f"D_res params with no PyTorch mapping: {sorted(unknown)}")
  return _layers_to_torch(params, {}, {})


def mae_to_torch(params: Mapping[str, Any], image_size: int) -> StateDict:
  """MAE params {encoder, decoder_*, mask_token} -> `torch_twins.MaskedAutoencoder` keys."""
  depth = sum(1 for k in params if k.startswith("decoder_block_"))
  known = {"encoder", "decoder_embed", "mask_token", "decoder_norm", "decoder_pred"} | {
      f"decoder_block_{i}" for i in range(depth)}
  unknown = set(params) - known
  if unknown:
    raise KeyError(f"MAE params with no PyTorch mapping: {sorted(unknown)}")
  out = vit_to_torch(params["encoder"], image_size, prefix="encoder.")
  dec = {"mask_token": _np(params["mask_token"]),
         **_norm_to_torch(params["decoder_norm"], "decoder_norm.")}
  for name in ("decoder_embed", "decoder_pred"):
    dec[f"{name}.weight"] = _np(params[name]["kernel"]).T
    dec[f"{name}.bias"] = _np(params[name]["bias"])
  for i in range(depth):
    dec.update(_block_to_torch(params[f"decoder_block_{i}"], f"decoder_blocks.{i}."))
  out.update({k: np.array(v, np.float32, order="C") for k, v in dec.items()})
  return out
