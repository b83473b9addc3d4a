"""Frozen perception networks for the stage-1 losses, in Flax.

- `VGGFeatures`: torchvision's VGG `features` stack (VGG19 by default); the conv at
  torchvision index i is `features_{i}` (<- `features.{i}.weight/bias`). Returns the
  ReLU outputs of the requested convs (the last two for L_perc).
- `IResNet`: insightface's ArcFace backbone (iresnet50 = layers (3, 4, 14, 3)),
  parameter names as its state_dict (`conv1`, `bn1`, `prelu`, `layer1_0/bn1`, ...,
  `fc`, `features`). With other widths/depths/outputs it is also the landmark,
  expression and eyebrow regressor of the SynthFACS versions.
- `WithHead`: a backbone plus a training-only linear head (identity classes, AU
  intensities): the embedding is the backbone's output.
- `ConvClassifier`: a small VGG-style net with a pooled linear head (the independent
  AU regressor and identity classifier used only for evaluation).

All take float images in [0, 1], (B, H, W, 3), resize to `input_size` if needed and
normalise inside, so callers never need to know each network's conventions. Shape
letters: B batch, H/W spatial, C channels, F features.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

VGG19_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
             512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def resize_to(x: jax.Array, size: int | None) -> jax.Array:
  if size is None or x.shape[1:3] == (size, size):
    return x
  return jax.image.resize(x, (x.shape[0], size, size, x.shape[3]), "bilinear", antialias=False)


def vgg_conv_indices(cfg: Sequence[Any]) -> list[int]:
  """torchvision `features` indices of the convs of a VGG cfg (conv, relu, [pool])."""
  out, i = [], 0
  for v in cfg:
    if v == "M":
      i += 1
    else:
      out.append(i)
      i += 2
  return out


class VGGFeatures(nn.Module):
  """torchvision VGG `features`; returns the ReLU maps after the last `num_outputs` convs."""
  cfg: Sequence[Any] = VGG19_CFG
  num_outputs: int = 2
  input_size: int | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x01: jax.Array) -> list[jax.Array]:
    x = (resize_to(x01.astype(jnp.float32), self.input_size) - IMAGENET_MEAN) / IMAGENET_STD
    x = x.astype(self.dtype)
    convs = vgg_conv_indices(self.cfg)
    wanted = set(convs[-self.num_outputs:])
    outs, i = [], 0
    for v in self.cfg:
      if v == "M":
        if len(outs) == len(wanted):
          break
        x = nn.max_pool(x, (2, 2), (2, 2))
        i += 1
        continue
      x = nn.relu(nn.Conv(int(v), (3, 3), padding=1, dtype=self.dtype, name=f"features_{i}")(x))
      if i in wanted:
        outs.append(x)
      i += 2
    return outs


class PReLU(nn.Module):
  """Per-channel PReLU (torch `nn.PReLU(C)`, slope initialised to 0.25)."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    a = self.param("weight", nn.initializers.constant(0.25), (x.shape[-1],))
    return jnp.where(x >= 0, x, a.astype(x.dtype) * x)


def _bn(train: bool, name: str, dtype: Any) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                      dtype=dtype, name=name)


def _conv(features: int, k: int, stride: int, name: str, dtype: Any) -> nn.Conv:
  return nn.Conv(features, (k, k), (stride, stride), padding=k // 2, use_bias=False,
                 dtype=dtype, name=name)


class IBasicBlock(nn.Module):
  """insightface IBasicBlock: bn1, conv1, bn2, prelu, conv2(stride), bn3 (+ downsample)."""
  planes: int
  stride: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    out = _bn(train, "bn1", self.dtype)(x)
    out = _conv(self.planes, 3, 1, "conv1", self.dtype)(out)
    out = PReLU(name="prelu")(_bn(train, "bn2", self.dtype)(out))
    out = _conv(self.planes, 3, self.stride, "conv2", self.dtype)(out)
    out = _bn(train, "bn3", self.dtype)(out)
    if self.stride != 1 or x.shape[-1] != self.planes:
      x = _conv(self.planes, 1, self.stride, "downsample_0", self.dtype)(x)
      x = _bn(train, "downsample_1", self.dtype)(x)
    return out + x


class IResNet(nn.Module):
  """insightface `iresnet`: 3x3 stem, four stride-2 stages, bn2, fc, `features` BN1d.

  The fc reads the NCHW-flattened map (as torch), so imported weights apply as they
  are. `final_bn=False` drops the `features` BN (regressors). Input: 112 px for the
  public ArcFace weights, (x - 0.5) / 0.5.
  """
  layers: Sequence[int] = (3, 4, 14, 3)
  widths: Sequence[int] = (64, 128, 256, 512)
  num_features: int = 512
  final_bn: bool = True
  input_size: int | None = 112
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x01: jax.Array, train: bool = False) -> jax.Array:
    x = ((resize_to(x01.astype(jnp.float32), self.input_size) - 0.5) / 0.5).astype(self.dtype)
    x = _conv(self.widths[0], 3, 1, "conv1", self.dtype)(x)
    x = PReLU(name="prelu")(_bn(train, "bn1", self.dtype)(x))
    for s, (n, w) in enumerate(zip(self.layers, self.widths)):
      for b in range(n):
        x = IBasicBlock(w, 2 if b == 0 else 1, self.dtype, name=f"layer{s + 1}_{b}")(x, train)
    x = _bn(train, "bn2", self.dtype)(x)
    x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)  # torch.flatten of NCHW
    x = nn.Dense(self.num_features, dtype=self.dtype, name="fc")(x)
    if self.final_bn:
      x = _bn(train, "features", self.dtype)(x)
    return x.astype(jnp.float32)


class WithHead(nn.Module):
  """`backbone(x)` as the embedding plus a linear head used only to train it.

  `cosine=True` gives a normalised (ArcFace-style, scale `scale`) classifier.
  """
  backbone: nn.Module
  num_outputs: int
  cosine: bool = False
  scale: float = 16.0

  @nn.compact
  def __call__(self, x01: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
    emb = self.backbone(x01, train)
    if self.cosine:
      w = self.param("head", nn.initializers.normal(0.01), (emb.shape[-1], self.num_outputs))
      e = emb / (jnp.linalg.norm(emb, axis=-1, keepdims=True) + 1e-6)
      w = w / (jnp.linalg.norm(w, axis=0, keepdims=True) + 1e-6)
      return emb, self.scale * e @ w
    return emb, nn.Dense(self.num_outputs, name="head")(emb)


class VGGWithHeads(nn.Module):
  """`VGGFeatures` (under `features`) + pooled identity and AU heads to train it from scratch."""
  cfg: Sequence[Any]
  num_subjects: int
  num_aus: int

  @nn.compact
  def __call__(self, x01: jax.Array, train: bool = False):
    del train
    feats = VGGFeatures(tuple(self.cfg), name="features")(x01)
    pooled = jnp.mean(feats[-1], axis=(1, 2))
    return feats, nn.Dense(self.num_subjects, name="id_head")(pooled), nn.Dense(
        self.num_aus, name="au_head")(pooled)


class ConvClassifier(nn.Module):
  """VGG-style conv stack and a linear output (evaluation networks).

  head="gap" averages the last map over positions (translation invariant);
  head="flatten" reads the whole map, so the output can depend on where a feature
  is (an AU stroke at the mouth corner vs the brow), which small AU regressors need.
  """
  cfg: Sequence[Any] = (32, "M", 64, "M", 128, "M", 128)
  num_outputs: int = 1
  input_size: int | None = None
  head: str = "gap"

  @nn.compact
  def __call__(self, x01: jax.Array, train: bool = False) -> jax.Array:
    del train
    x = resize_to(x01.astype(jnp.float32), self.input_size) * 2.0 - 1.0
    for i, v in enumerate(self.cfg):
      if v == "M":
        x = nn.max_pool(x, (2, 2), (2, 2))
      else:
        x = nn.relu(nn.Conv(int(v), (3, 3), padding=1, name=f"conv_{i}")(x))
    if self.head == "gap":
      x = jnp.mean(x, axis=(1, 2))
    elif self.head == "flatten":
      x = x.reshape(x.shape[0], -1)
    else:
      raise ValueError(f"ConvClassifier head={self.head!r}: expected 'gap' or 'flatten'")
    return nn.Dense(self.num_outputs, name="out")(x)


@dataclasses.dataclass(frozen=True)
class PerceptionNets:
  """The frozen networks of the stage-1 losses and their variables.

  `variables[name]` is the full Flax variable dict (`params`, `batch_stats`) of
  `modules[name]`. Names: vgg, identity, landmarks, expression, eyebrow (losses);
  eval_au, eval_id (evaluation only, absent for imported weights).
  """
  modules: dict[str, nn.Module]
  variables: dict[str, Any]
  meta: dict[str, Any]

  def functions(self, expression_output: str = "embedding"
                ) -> dict[str, Callable[[Any, jax.Array], Any]]:
    """name -> f(variables, x01): the outputs the losses compare, inference mode.

    `expression_output`: what L_exp compares for the expression network: its
    "embedding" (the default; FECNet's role), or its "head", the AU intensities a
    `WithHead` network was trained to regress (identity-free targets; SynthFACS).
    """
    m = self.modules
    if expression_output not in ("embedding", "head"):
      raise ValueError(f"expression_output={expression_output!r}: expected 'embedding' or 'head'")

    def embed(name, part=0):
      def f(v, x):
        out = m[name].apply(v, x) if isinstance(m[name], VGGFeatures) else m[name].apply(v, x, False)
        if part and not isinstance(out, tuple):
          raise ValueError(f"the {name} network ({type(m[name]).__name__}) has no training head; "
                           "use expression_output='embedding'")
        return out[part] if isinstance(out, tuple) else out
      return f

    def landmarks(v, x):
      out = m["landmarks"].apply(v, x, False)
      return out.reshape(out.shape[0], -1, 2)

    return {"vgg": embed("vgg"), "identity": embed("identity"),
            "landmarks": landmarks,
            "expression": embed("expression", 1 if expression_output == "head" else 0),
            "eyebrow": embed("eyebrow")}
