"""PyTorch state_dict -> Flax variables for the perception networks of stage 1.

- torchvision VGG (`features.{i}.weight/bias`) -> `perception.VGGFeatures` params
  (`features_{i}/kernel` = weight.permute(2, 3, 1, 0)); classifier keys are ignored.
- insightface iresnet (`conv1.weight`, `bn1.*`, `prelu.weight`, `layer{s}.{b}.{bn1,
  conv1, bn2, prelu, conv2, bn3, downsample.0, downsample.1}`, `bn2.*`, `fc.*`,
  `features.*`) -> `perception.IResNet` variables (`params` + `batch_stats`).

Values may be torch tensors or NumPy arrays; torch itself is never imported here, so
the importers work from any loaded state_dict (`torch.load`, safetensors).
`export_vgg` / `export_iresnet` / `export_conv_classifier` go the other way (NumPy
state_dicts for the twins in `torch_twins.perception`).
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np


def _np(x: Any) -> np.ndarray:
  if hasattr(x, "detach"):
    x = x.detach().cpu().numpy()
  return np.asarray(x, np.float32)


def _conv_kernel(w: Any) -> np.ndarray:
  """torch (O, I, kh, kw) -> Flax (kh, kw, I, O)."""
  return np.transpose(_np(w), (2, 3, 1, 0))


def import_vgg(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """torchvision VGG `features.*` -> `{"params": {"features_{i}": {kernel, bias}}}`."""
  params: dict[str, Any] = {}
  pattern = re.compile(r"^features\.(\d+)\.(weight|bias)$")
  for key, value in state_dict.items():
    m = pattern.match(key)
    if not m:
      continue
    name = f"features_{m.group(1)}"
    slot = "kernel" if m.group(2) == "weight" else "bias"
    params.setdefault(name, {})[slot] = _conv_kernel(value) if slot == "kernel" else _np(value)
  if not params:
    raise KeyError("no `features.N.weight` keys: not a torchvision VGG state_dict")
  return {"params": params}


def _flax_name(torch_module: str) -> str:
  """`layer1.0.downsample.1` -> `layer1_0/downsample_1` (the Flax module path)."""
  m = re.match(r"^layer(\d+)\.(\d+)\.(.+)$", torch_module)
  if m:
    rest = m.group(3).replace("downsample.", "downsample_")
    return f"layer{m.group(1)}_{m.group(2)}/{rest}"
  return torch_module


def import_iresnet(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """insightface iresnet state_dict -> `{"params": ..., "batch_stats": ...}`."""
  params: dict[str, Any] = {}
  stats: dict[str, Any] = {}

  def put(tree, path, leaf, value):
    node = tree
    for part in path.split("/"):
      node = node.setdefault(part, {})
    node[leaf] = value

  modules: dict[str, dict[str, Any]] = {}
  for key, value in state_dict.items():
    module, _, leaf = key.rpartition(".")
    modules.setdefault(module, {})[leaf] = value
  for module, leaves in modules.items():
    path = _flax_name(module)
    if "running_mean" in leaves:  # BatchNorm (2d or the 1d `features`)
      put(params, path, "scale", _np(leaves["weight"]))
      put(params, path, "bias", _np(leaves["bias"]))
      put(stats, path, "mean", _np(leaves["running_mean"]))
      put(stats, path, "var", _np(leaves["running_var"]))
    elif module.endswith("prelu"):
      put(params, path, "weight", _np(leaves["weight"]))
    elif module == "fc":
      put(params, path, "kernel", _np(leaves["weight"]).T)
      put(params, path, "bias", _np(leaves["bias"]))
    elif "weight" in leaves and np.ndim(_np(leaves["weight"])) == 4:
      put(params, path, "kernel", _conv_kernel(leaves["weight"]))
    else:
      raise KeyError(f"unexpected iresnet module {module!r} with {sorted(leaves)}")
  if "conv1" not in params:
    raise KeyError("no `conv1.weight`: not an insightface iresnet state_dict")
  return {"params": params, "batch_stats": stats}


def _torch_name(flax_path: str) -> str:
  """`layer1_0/downsample_1` -> `layer1.0.downsample.1` (inverse of `_flax_name`)."""
  m = re.match(r"^layer(\d+)_(\d+)/(.+)$", flax_path)
  if m:
    rest = m.group(3).replace("downsample_", "downsample.").replace("/", ".")
    return f"layer{m.group(1)}.{m.group(2)}.{rest}"
  return flax_path.replace("/", ".")


def export_vgg(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """`VGGFeatures` variables -> torchvision `features.{i}.weight/bias` (NumPy)."""
  out = {}
  for name, leaves in variables["params"].items():
    m = re.match(r"^features_(\d+)$", name)
    if not m:
      raise KeyError(f"unexpected VGG module {name!r}")
    out[f"features.{m.group(1)}.weight"] = np.ascontiguousarray(
        np.transpose(_np(leaves["kernel"]), (3, 2, 0, 1)))
    out[f"features.{m.group(1)}.bias"] = _np(leaves["bias"])
  return {k: np.array(v) for k, v in out.items()}  # Writable copies (torch.from_numpy).


def export_iresnet(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """`IResNet` variables (`params` + `batch_stats`) -> insightface state_dict (NumPy),
  the inverse of `import_iresnet` (BatchNorms get `num_batches_tracked` = 0)."""
  stats = variables.get("batch_stats", {})
  out: dict[str, np.ndarray] = {}

  def walk(node, stat, path):
    if "kernel" in node or "scale" in node or "weight" in node:
      key = _torch_name(path)
      if "scale" in node:  # BatchNorm
        out[key + ".weight"], out[key + ".bias"] = _np(node["scale"]), _np(node["bias"])
        out[key + ".running_mean"], out[key + ".running_var"] = (_np(stat["mean"]),
                                                                 _np(stat["var"]))
        out[key + ".num_batches_tracked"] = np.zeros((), np.int64)
      elif "weight" in node:  # PReLU
        out[key + ".weight"] = _np(node["weight"])
      elif np.ndim(node["kernel"]) == 2:  # fc
        out[key + ".weight"] = np.ascontiguousarray(_np(node["kernel"]).T)
        out[key + ".bias"] = _np(node["bias"])
      else:
        out[key + ".weight"] = np.ascontiguousarray(
            np.transpose(_np(node["kernel"]), (3, 2, 0, 1)))
      return
    for name, sub in node.items():
      walk(sub, stat.get(name, {}), f"{path}/{name}" if path else name)

  walk(variables["params"], stats, "")
  return {k: np.array(v) for k, v in out.items()}


def export_conv_classifier(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """`ConvClassifier` variables -> `torch_twins.perception.ConvClassifier` state_dict."""
  out = {}
  for name, leaves in variables["params"].items():
    if re.match(r"^conv_\d+$", name):
      out[f"{name}.weight"] = np.ascontiguousarray(
          np.transpose(_np(leaves["kernel"]), (3, 2, 0, 1)))
    elif name == "out":  # The twin flattens in the Flax order: the kernel, transposed.
      out["out.weight"] = np.ascontiguousarray(_np(leaves["kernel"]).T)
    else:
      raise KeyError(f"unexpected ConvClassifier module {name!r}")
    out[f"{name}.bias"] = _np(leaves["bias"])
  return {k: np.array(v) for k, v in out.items()}
