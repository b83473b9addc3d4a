"""PyTorch state_dict -> Flax variables for the perception networks of stage 1.

- torchvision VGG (`features.{i}.weight/bias`) -> `perception.VGGFeatures` params
  (`features_{i}/kernel` = weight.permute(2, 3, 1, 0)); classifier keys are ignored.
- insightface iresnet (`conv1.weight`, `bn1.*`, `prelu.weight`, `layer{s}.{b}.{bn1,
  conv1, bn2, prelu, conv2, bn3, downsample.0, downsample.1}`, `bn2.*`, `fc.*`,
  `features.*`) -> `perception.IResNet` variables (`params` + `batch_stats`).
- face-alignment 2D-FAN -> `fan.FAN` (`import_fan`); torchvision ResNet with its `fc` as
  an embedding head -> `resnet.ResNet` (`import_resnet`); DECA `E_flame` ->
  `resnet.FlameEncoder` (`import_deca_flame`). These go through `import_modules` (any
  conv / Linear / BatchNorm tree, `a.0.b` -> `a_0/b`) and `check_layout` against
  `jax.eval_shape` of the Flax module, so a wrong state_dict raises a KeyError naming
  the layout expected and what is missing, unexpected or of the wrong shape.

Values may be torch tensors or NumPy arrays; torch itself is never imported here, so
the importers work from any loaded state_dict (`torch.load`, safetensors).
`export_vgg` / `export_iresnet` / `export_conv_classifier` go the other way (NumPy
state_dicts for the twins in `torch_twins.perception`).
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from norface_jax.models import fan, resnet


def _np(x: Any) -> np.ndarray:
  if hasattr(x, "detach"):
    x = x.detach().cpu().numpy()
  return np.asarray(x, np.float32)


def _conv_kernel(w: Any) -> np.ndarray:
  """torch (O, I, kh, kw) -> Flax (kh, kw, I, O)."""
  return np.transpose(_np(w), (2, 3, 1, 0))


def _put(tree: dict, path: str, leaf: str, value: Any) -> None:
  """tree[path parts...][leaf] = value, creating the nested dicts."""
  node = tree
  for part in path.split("/"):
    node = node.setdefault(part, {})
  node[leaf] = value


def _by_module(state_dict: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
  """`a.b.weight` keys grouped as {"a.b": {"weight": ...}}; `num_batches_tracked` dropped."""
  modules: dict[str, dict[str, Any]] = {}
  for key, value in state_dict.items():
    module, _, leaf = key.rpartition(".")
    if leaf != "num_batches_tracked":
      modules.setdefault(module, {})[leaf] = value
  return modules


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

  for module, leaves in _by_module(state_dict).items():
    path = _flax_name(module)
    if "running_mean" in leaves:  # BatchNorm (2d or the 1d `features`)
      _put(params, path, "scale", _np(leaves["weight"]))
      _put(params, path, "bias", _np(leaves["bias"]))
      _put(stats, path, "mean", _np(leaves["running_mean"]))
      _put(stats, path, "var", _np(leaves["running_var"]))
    elif module.endswith("prelu"):
      _put(params, path, "weight", _np(leaves["weight"]))
    elif module == "fc":
      _put(params, path, "kernel", _np(leaves["weight"]).T)
      _put(params, path, "bias", _np(leaves["bias"]))
    elif "weight" in leaves and np.ndim(_np(leaves["weight"])) == 4:
      _put(params, path, "kernel", _conv_kernel(leaves["weight"]))
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


# --- Generic torch module tree -> Flax, and the public layouts of the other three nets.


def flax_path(torch_module: str) -> str:
  """`conv2.downsample.0` -> `conv2/downsample_0`, `layer1.0.bn1` -> `layer1_0/bn1`:
  a numeric part joins the name before it (the Flax module names of fan.py, resnet.py)."""
  out: list[str] = []
  for part in torch_module.split("."):
    if part.isdigit() and out:
      out[-1] = f"{out[-1]}_{part}"
    else:
      out.append(part)
  return "/".join(out)


def import_modules(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """Conv2d, Linear and BatchNorm weights of any torch module tree -> Flax variables.

  A module with `running_mean` is a BatchNorm (`scale`, `bias` / `mean`, `var`), a 4-D
  `weight` a conv (`kernel` (kh, kw, I, O)), a 2-D one a Linear (`kernel` = weight.T);
  `num_batches_tracked` is dropped. Anything else raises.
  """
  params: dict[str, Any] = {}
  stats: dict[str, Any] = {}

  for module, leaves in _by_module(state_dict).items():
    path = flax_path(module)
    if "running_mean" in leaves:
      _put(params, path, "scale", _np(leaves["weight"]))
      _put(params, path, "bias", _np(leaves["bias"]))
      _put(stats, path, "mean", _np(leaves["running_mean"]))
      _put(stats, path, "var", _np(leaves["running_var"]))
    elif "weight" in leaves and np.ndim(_np(leaves["weight"])) in (2, 4):
      w = _np(leaves["weight"])
      _put(params, path, "kernel", _conv_kernel(w) if w.ndim == 4 else w.T)
      if "bias" in leaves:
        _put(params, path, "bias", _np(leaves["bias"]))
    else:
      raise KeyError(f"module {module!r} with {sorted(leaves)} is neither a conv, a Linear "
                     "nor a BatchNorm")
  out = {"params": params}
  if stats:
    out["batch_stats"] = stats
  return out


def check_layout(variables: Mapping[str, Any], expected: Mapping[str, Any], layout: str) -> None:
  """Raises a KeyError naming `layout` unless `variables` has exactly the paths and
  shapes of `expected` (a `jax.eval_shape(model.init, ...)` tree)."""
  def flat(tree, prefix=""):
    out = {}
    for k, v in tree.items():
      if isinstance(v, Mapping):
        out.update(flat(v, f"{prefix}{k}/"))
      else:
        out[f"{prefix}{k}"] = tuple(np.shape(v))
    return out

  got, want = flat(variables), flat(expected)
  missing = sorted(set(want) - set(got))
  extra = sorted(set(got) - set(want))
  shapes = [f"{k}: {got[k]} != {want[k]}" for k in sorted(set(got) & set(want))
            if got[k] != want[k]]
  if missing or extra or shapes:
    raise KeyError(f"not a {layout} state_dict; as Flax paths: missing {missing[:5]} "
                   f"(of {len(missing)}), "
                   f"unexpected {extra[:5]} (of {len(extra)}), wrong shapes {shapes[:5]}")


FAN_LAYOUT = ("face-alignment FAN (keys conv1.weight, bn1.*, conv2.bn1.weight, "
              "conv2.downsample.0.*, m0.b1_4.conv1.weight, top_m_0.*, conv_last0.*, bn_end0.*, "
              "l0.weight, bl0.*, al0.*)")
RESNET_LAYOUT = ("torchvision ResNet (keys conv1.weight, bn1.*, layer1.0.conv1.weight, ..., "
                 "layer4.N.bn2/bn3.*, downsample.0/1.*, optional fc.weight/bias)")
DECA_LAYOUT = ("DECA E_flame (keys encoder.conv1.weight, encoder.bn1.*, "
               "encoder.layer{1..4}.N.{conv1..3,bn1..3,downsample.0/1}.*, layers.0.weight "
               "(1024, 2048), layers.2.weight (236, 1024))")


def _expected(model: Any, size: int) -> dict[str, Any]:
  """The variable shapes `model.init` makes (every net resizes inside: any side works)."""
  return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, size, size, 3)))


def fan_num_modules(state_dict: Mapping[str, Any]) -> int:
  """How many hourglass stacks a FAN state_dict has (the `l{i}.weight` heatmap heads)."""
  n = sum(1 for k in state_dict if re.match(r"^l\d+\.weight$", k))
  if n == 0:
    raise KeyError(f"no `l0.weight`: not a {FAN_LAYOUT} state_dict")
  return n


def import_fan(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """face-alignment `FAN` state_dict (2DFAN-4: 4 stacks) -> `fan.FAN` variables."""
  variables = import_modules(state_dict)
  check_layout(variables, _expected(fan.FAN(fan_num_modules(state_dict), input_size=64), 64),
               FAN_LAYOUT)
  return variables


def resnet_spec(state_dict: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """`layers`, `block` and `num_outputs` (the `fc` width, or None) of a torchvision
  ResNet state_dict whose keys start with `prefix`."""
  counts: dict[int, int] = {}
  for k in state_dict:
    m = re.match(rf"^{re.escape(prefix)}layer(\d)\.(\d+)\.conv1\.weight$", k)
    if m:
      counts[int(m.group(1))] = max(counts.get(int(m.group(1)), 0), int(m.group(2)) + 1)
  if sorted(counts) != [1, 2, 3, 4]:
    raise KeyError(f"no `{prefix}layer1..4.N.conv1.weight`: not a {RESNET_LAYOUT} state_dict"
                   + (f" under `{prefix}`" if prefix else ""))
  block = "bottleneck" if f"{prefix}layer1.0.conv3.weight" in state_dict else "basic"
  fc = state_dict.get(f"{prefix}fc.weight")
  return {"layers": [counts[s] for s in (1, 2, 3, 4)], "block": block,
          "num_outputs": None if fc is None else int(np.shape(fc)[0])}


def import_resnet(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """torchvision ResNet (resnet18/34 BasicBlock, 50/101/152 Bottleneck) state_dict, its
  `fc` the embedding head, -> `resnet.ResNet` variables (`fc` optional)."""
  spec = resnet_spec(state_dict)
  variables = import_modules(state_dict)
  model = resnet.ResNet(tuple(spec["layers"]), spec["block"], spec["num_outputs"], input_size=64)
  check_layout(variables, _expected(model, 64), RESNET_LAYOUT)
  return variables


def import_deca_flame(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """DECA `E_flame` state_dict (`checkpoint['E_flame']` of deca_model.tar) ->
  `resnet.FlameEncoder` variables."""
  if "layers.2.weight" not in state_dict:
    raise KeyError(f"no `layers.2.weight`: not a {DECA_LAYOUT} state_dict")
  spec = resnet_spec(state_dict, "encoder.")
  if spec != {"layers": [3, 4, 6, 3], "block": "bottleneck", "num_outputs": None}:
    raise KeyError(f"encoder is {spec}, not DECA's ResNet-50: not a {DECA_LAYOUT} state_dict")
  variables = import_modules(state_dict)
  check_layout(variables, _expected(resnet.FlameEncoder(input_size=64), 64), DECA_LAYOUT)
  return variables


def iresnet_spec(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """`IResNet` fields of an insightface iresnet state_dict: `layers`, `widths`,
  `num_features`, `final_bn` and the `input_size` its fc width implies."""
  layers, widths = [], []
  for s in (1, 2, 3, 4):
    blocks = {int(m.group(1)) for k in state_dict
              for m in [re.match(rf"^layer{s}\.(\d+)\.conv1\.weight$", k)] if m}
    if not blocks:
      raise KeyError(f"no `layer{s}.0.conv1.weight`: not an insightface iresnet state_dict")
    layers.append(max(blocks) + 1)
    widths.append(int(np.shape(state_dict[f"layer{s}.0.conv1.weight"])[0]))
  fc_in = int(np.shape(state_dict["fc.weight"])[1])
  side = int(round(np.sqrt(fc_in / widths[-1])))
  return {"layers": layers, "widths": widths, "num_features": int(np.shape(state_dict["fc.weight"])[0]),
          "final_bn": "features.running_mean" in state_dict, "input_size": side * 16}


def vgg_cfg(state_dict: Mapping[str, Any]) -> list[Any]:
  """The VGG cfg (channels, "M" for pools) of torchvision `features.{i}` conv keys:
  a gap of 3 between conv indices (conv, ReLU, pool) is a pool."""
  convs = sorted(int(m.group(1)) for k in state_dict
                 for m in [re.match(r"^features\.(\d+)\.weight$", k)] if m)
  if not convs:
    raise KeyError("no `features.N.weight` keys: not a torchvision VGG state_dict")
  cfg: list[Any] = []
  for i, j in zip(convs, convs[1:] + [None]):
    cfg.append(int(np.shape(state_dict[f"features.{i}.weight"])[0]))
    if j is not None and j - i == 3:
      cfg.append("M")
    elif j is not None and j - i != 2:
      raise KeyError(f"features.{i} -> features.{j}: not a torchvision VGG (no batch norm) layout")
  return cfg
