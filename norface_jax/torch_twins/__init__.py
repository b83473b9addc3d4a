"""PyTorch twins of the exported networks: plain PyTorch, no JAX or Flax import.

A PyTorch-only user copies this package (or installs the project) and loads an
export written by `launch/export_torch.py`:

  import json, safetensors.torch
  from norface_jax import torch_twins
  arch = json.load(open("out/architecture.json"))
  model = torch_twins.from_architecture(arch).eval()
  model.load_state_dict(safetensors.torch.load_file("out/model.safetensors"), strict=True)

`TWINS` maps the architecture JSON's `"class"` to a twin class; a new network adds an
entry here (and an exporter entry in `norface_jax.interop.exportable`). The twins of
networks that are not exported (the MAE, D_res, the stage-1 perception networks) serve
the side-by-side benchmark (`launch/benchmark.py`) and the parity tests.
"""

from typing import Any

from torch import nn

from norface_jax.torch_twins.classifier import NorfaceClassifier
from norface_jax.torch_twins.deepfn import DeepFNAutoEncoder, LeNet5
from norface_jax.torch_twins.discriminator import MultiScaleDiscriminator
from norface_jax.torch_twins.mae import MaskedAutoencoder
from norface_jax.torch_twins.moe import MoEBlock
from norface_jax.torch_twins.normalizer import NorfaceNormalizer
from norface_jax.torch_twins.perception import ConvClassifier, IResNet, VGGFeatures
from norface_jax.torch_twins.vit import VisionTransformer, sincos_pos_embed

TWINS: dict[str, type[nn.Module]] = {
    "VisionTransformer": VisionTransformer,
    "NorfaceClassifier": NorfaceClassifier,
    "NorfaceNormalizer": NorfaceNormalizer,
    "DeepFNAutoEncoder": DeepFNAutoEncoder,
    "LeNet5": LeNet5,
}


def from_architecture(arch: dict[str, Any]) -> nn.Module:
  """Builds the twin an `architecture.json` names (`{"class": ..., "kwargs": {...}}`)."""
  name = arch["class"]
  if name not in TWINS:
    raise KeyError(f"no PyTorch twin {name!r}; known: {sorted(TWINS)}")
  return TWINS[name](**arch["kwargs"])
