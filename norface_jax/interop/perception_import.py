"""A perception_dir from the public PyTorch weights of the five stage-1 loss networks.

  python launch/import_perception.py --vgg=vgg19.pth --arcface=backbone.pth \\
      --landmarks=2DFAN4.pth.tar --expression=resnet_emb.pt --eyebrow=deca_model.tar \\
      --flame=generic_model.pkl --flame_landmarks=landmark_embedding.npy --out=P

| name       | loss  | public weights (state_dict layout)                      | Flax module |
| ---------- | ----- | ------------------------------------------------------- | ----------- |
| vgg        | L_perc| torchvision VGG (`features.{i}`), last two ReLU maps    | `perception.VGGFeatures` |
| identity   | L_id  | insightface ArcFace iresnet (`conv1`, `layer1.0.bn1`...) | `perception.IResNet` |
| landmarks  | L_lm  | face-alignment 2D-FAN (`conv1`, `m0.b1_4`, `l3`...)     | `fan.FAN` (soft-argmax) |
| expression | L_exp | torchvision ResNet whose `fc` is the embedding head     | `resnet.ResNet` |
| eyebrow    | L_eye | DECA `E_flame` (`encoder.layer1.0.conv1`, `layers.2`)   | `resnet.FlameEncoder` |

FECNet's own PyTorch port (an Inception-ResNet trunk + DenseNet) is not covered: the
expression slot takes a torchvision ResNet (18/34: BasicBlock; 50/101/152: Bottleneck)
with a Linear embedding head as `fc`.

The directory holds `perception.json` (`kind: "imported"`, each net's architecture
spec, the source files) and an Orbax checkpoint of the variables;
`training.perception_nets.load` reads it back (no `eval_au`/`eval_id`: stage 1's evaluation
against independent networks skips itself).
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from norface_jax.interop import torch_perception as tp
from norface_jax.models import fan, perception
from norface_jax.training import checkpointing, perception_nets

NETS = ("vgg", "identity", "landmarks", "expression", "eyebrow")
LAYOUTS = {"vgg": "a torchvision VGG state_dict (features.N.weight)",
           "identity": "an insightface iresnet state_dict (conv1, layer1.0.bn1, fc, features)",
           "landmarks": f"a {tp.FAN_LAYOUT} state_dict",
           "expression": f"a {tp.RESNET_LAYOUT} state_dict",
           "eyebrow": f"a {tp.DECA_LAYOUT} state_dict, or DECA's deca_model.tar (under 'E_flame')"}


def read_state_dict(path: str, name: str) -> dict[str, np.ndarray]:
  """float32 NumPy tensors of a `.safetensors` or torch (`.pth`, `.pt`, `.tar`) file.

  Unwraps DECA's checkpoint (`E_flame`) and `state_dict` / `model` wrappers and strips a
  DataParallel `module.` prefix. torch files are read with `weights_only=True`.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"{name} weights {path!r}: no such file (expected {LAYOUTS[name]})")
  if path.endswith(".safetensors"):
    import safetensors.numpy
    sd: Mapping[str, Any] = safetensors.numpy.load_file(path)
  else:
    import torch
    sd = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("E_flame", "state_dict", "model"):
      if isinstance(sd, Mapping) and isinstance(sd.get(key), Mapping):
        logging.info("Reading %s[%r].", path, key)
        sd = sd[key]
        break
  if not isinstance(sd, Mapping):
    raise KeyError(f"{name} weights {path!r}: not a state_dict (expected {LAYOUTS[name]})")
  out = {}
  for k, v in sd.items():
    if hasattr(v, "detach"):
      v = v.detach().float().numpy()
    if isinstance(v, np.ndarray):
      out[k[len("module."):] if k.startswith("module.") else k] = v.astype(np.float32)
  return out


def _convert(name: str, sd: dict[str, np.ndarray], options: Mapping[str, Any]):
  """(spec, variables) of one network from its state_dict."""
  size = options.get("input_sizes", {}).get(name)
  if name == "vgg":
    return ({"arch": "vgg", "cfg": tp.vgg_cfg(sd), "num_outputs": 2, "input_size": size},
            tp.import_vgg(sd))
  if name == "identity":
    spec = {"arch": "iresnet", **tp.iresnet_spec(sd)}
    if size is not None and size != spec["input_size"]:
      raise ValueError(f"identity: its fc fixes the input at {spec['input_size']} px, not {size}")
    return spec, tp.import_iresnet(sd)
  if name == "landmarks":
    return ({"arch": "fan", "num_modules": tp.fan_num_modules(sd), "input_size": size or 256,
             "temperature": float(options.get("landmark_temperature", fan.DEFAULT_TEMPERATURE))},
            tp.import_fan(sd))
  if name == "expression":
    spec = {"arch": "resnet", **tp.resnet_spec(sd), "input_size": size or 224,
            "normalize": options.get("expression_normalize", "imagenet")}
    if spec["num_outputs"] is None:
      raise KeyError("no `fc.weight`: the expression ResNet needs its embedding head as `fc`")
    return spec, tp.import_resnet(sd)
  if name == "eyebrow":
    channels = options["eyebrow_channels"]
    return ({"arch": "deca_flame", "input_size": size or 224,
             "exp_channels": None if channels == "all" else [int(c) for c in channels]},
            tp.import_deca_flame(sd))
  raise ValueError(f"unknown perception net {name!r}")


def import_perception(paths: Mapping[str, str], *, image_size: int = 256,
                      **options: Any) -> perception.PerceptionNets:
  """The five loss networks from their weight files (`paths[name]`, names as `NETS`).

  options: `eyebrow_channels`: the FLAME expression indices L_eye compares, "all" (the
  50), or None (the default): the channels that move the eyebrows, read off the FLAME
  model (`flame`: DECA's generic_model.pkl, `flame_landmarks`: its
  landmark_embedding.npy; `interop.flame.select`, `eyebrow_coverage` 0.9);
  `landmark_temperature` (`fan.soft_argmax`), `expression_normalize` ("imagenet" or
  "none"), `input_sizes` {name: px} (defaults: VGG as given, ArcFace from its fc,
  FAN 256, ResNets 224). A missing file or a wrong layout raises naming the file.
  """
  missing = [n for n in NETS if not paths.get(n)]
  if missing:
    raise ValueError(f"no weight files given for {missing}: the stage-1 losses need all of {NETS}")
  options = dict(options)
  eyebrow = resolve_eyebrow_channels(options)
  specs, variables = {}, {}
  for name in NETS:
    sd = read_state_dict(paths[name], name)
    try:
      specs[name], variables[name] = _convert(name, sd, options)
    except KeyError as e:
      raise KeyError(f"{name} weights {paths[name]!r}: {e.args[0]} (expected {LAYOUTS[name]})") from e
    logging.info("Imported %s from %s: %s", name, paths[name], specs[name])
  meta = {"kind": "imported", "image_size": int(image_size), "imported": specs,
          "sources": {n: os.path.abspath(paths[n]) for n in NETS}, "eyebrow_channels": eyebrow}
  return perception.PerceptionNets(perception_nets.build_imported_modules(specs), variables, meta)


def resolve_eyebrow_channels(options: dict[str, Any]) -> dict[str, Any]:
  """Sets options['eyebrow_channels'] to a list or "all"; returns how it was chosen."""
  channels = options.get("eyebrow_channels")
  flame_path, embedding = options.pop("flame", None), options.pop("flame_landmarks", None)
  coverage = float(options.pop("eyebrow_coverage", 0.9))
  if channels is not None:
    options["eyebrow_channels"] = "all" if channels == "all" else [int(c) for c in channels]
    return {"rule": "given", "channels": options["eyebrow_channels"]}
  if not flame_path or not embedding:
    raise ValueError(
        "L_eye compares the FLAME expression channels that move the eyebrows; they are read "
        "off the FLAME model DECA runs with: pass flame=<DECA data>/generic_model.pkl and "
        "flame_landmarks=<DECA data>/landmark_embedding.npy (launch/import_perception.py "
        "--flame=... --flame_landmarks=...), or name the channels (--eyebrow_channels=3,4 "
        "or --eyebrow_channels=all)")
  from norface_jax.interop import flame
  chosen = flame.select(flame_path, embedding, coverage)
  options["eyebrow_channels"] = chosen["channels"]
  logging.info("L_eye channels (%.0f%% of the FLAME brow effect): %s", 100 * coverage,
               chosen["channels"])
  return {"rule": "flame brow effect", **chosen}


def write(nets: perception.PerceptionNets, perception_dir: str) -> str:
  """Writes `perception.json` and the variables (an Orbax checkpoint at step 0)."""
  perception_dir = os.path.abspath(os.path.expanduser(perception_dir))
  if os.path.exists(os.path.join(perception_dir, "checkpoints")):
    raise FileExistsError(f"{perception_dir}/checkpoints exists: choose an empty --out")
  os.makedirs(perception_dir, exist_ok=True)
  ckpt = checkpointing.Checkpointer(perception_dir, keep=1, async_save=False)
  ckpt.save(0, jax.tree.map(jnp.asarray, nets.variables), force=True)
  ckpt.close()
  with open(os.path.join(perception_dir, "perception.json"), "w") as f:
    json.dump(nets.meta, f, indent=1)
  return perception_dir


def import_to_dir(paths: Mapping[str, str], out: str, **options: Any) -> str:
  """`import_perception` then `write`: what `launch/import_perception.py` runs."""
  return write(import_perception(paths, **options), out)
