"""torchvision-layout ResNets in Flax: the DECA FLAME encoder (L_eye) and a generic
ResNet + linear embedding head (L_exp).

- `ResNet`: torchvision's ResNet (v1.5: the stride on the 3x3 conv), `BasicBlock`
  (resnet18/34) or `Bottleneck` (resnet50/101/152); module names as its state_dict
  with `.N` joined by `_` (`layer1.0.downsample.1` -> `layer1_0/downsample_1`).
  Global average pool, then an optional `fc` linear layer.
- `FlameEncoder`: DECA's `E_flame` (`decalib/models/encoders.py` `ResnetEncoder`):
  ResNet-50 under `encoder`, `layers_0` Linear(2048, 1024), ReLU, `layers_2`
  Linear(1024, 236); the 236 numbers are FLAME's shape 100, tex 50, exp 50, pose 6,
  cam 3, light 27 (DECA's `param_list` order). DECA pools with `AvgPool2d(7)`, the
  global mean at its 224 px input, which is what `ResNet` computes.

Inputs are RGB in [0, 1], resized to `input_size` inside. normalize="imagenet" uses
torchvision's mean/std; "none" feeds [0, 1] as it is (DECA). Shape letters: B batch,
H/W spatial, C channels, F features.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from norface_jax.models.perception import IMAGENET_MEAN, IMAGENET_STD, resize_to

# DECA's FLAME code, in order (decalib/utils/config.py `param_list`, `n_*`).
FLAME_SPLIT = (("shape", 100), ("tex", 50), ("exp", 50), ("pose", 6), ("cam", 3), ("light", 27))
FLAME_CODE_SIZE = sum(n for _, n in FLAME_SPLIT)
RESNET_LAYERS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3),
                 152: (3, 8, 36, 3)}


def _bn(train: bool, name: str) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)


def _conv(c: int, k: int, stride: int, name: str) -> nn.Conv:
  return nn.Conv(c, (k, k), (stride, stride), padding=k // 2, use_bias=False, name=name)


class BasicBlock(nn.Module):
  """conv1 3x3(stride), bn1, ReLU, conv2 3x3, bn2, + (downsample), ReLU."""
  planes: int
  stride: int = 1
  expansion = 1

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    out = nn.relu(_bn(train, "bn1")(_conv(self.planes, 3, self.stride, "conv1")(x)))
    out = _bn(train, "bn2")(_conv(self.planes, 3, 1, "conv2")(out))
    return nn.relu(out + _shortcut(x, self.planes, self.stride, train))


class Bottleneck(nn.Module):
  """conv1 1x1, conv2 3x3(stride), conv3 1x1 to 4 * planes (each + BN), + (downsample)."""
  planes: int
  stride: int = 1
  expansion = 4

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    out = nn.relu(_bn(train, "bn1")(_conv(self.planes, 1, 1, "conv1")(x)))
    out = nn.relu(_bn(train, "bn2")(_conv(self.planes, 3, self.stride, "conv2")(out)))
    out = _bn(train, "bn3")(_conv(self.planes * 4, 1, 1, "conv3")(out))
    return nn.relu(out + _shortcut(x, self.planes * 4, self.stride, train))


def _shortcut(x: jax.Array, out_c: int, stride: int, train: bool) -> jax.Array:
  """The identity, or torchvision's `downsample` (1x1 conv(stride) + BN) when the shape
  changes; called inside a block's compact method, so the names are the block's."""
  if stride == 1 and x.shape[-1] == out_c:
    return x
  return _bn(train, "downsample_1")(_conv(out_c, 1, stride, "downsample_0")(x))


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(nn.Module):
  """torchvision ResNet trunk + global average pool (+ `fc` when `num_outputs` is set)."""
  layers: Sequence[int] = (3, 4, 6, 3)
  block: str = "bottleneck"
  num_outputs: int | None = None
  input_size: int | None = 224
  normalize: str = "imagenet"

  @nn.compact
  def __call__(self, x01: jax.Array, train: bool = False) -> jax.Array:
    if self.block not in BLOCKS:
      raise ValueError(f"ResNet block={self.block!r}: expected one of {sorted(BLOCKS)}")
    x = resize_to(x01.astype(jnp.float32), self.input_size)
    if self.normalize == "imagenet":
      x = (x - IMAGENET_MEAN) / IMAGENET_STD
    elif self.normalize != "none":
      raise ValueError(f"ResNet normalize={self.normalize!r}: expected 'imagenet' or 'none'")
    x = nn.relu(_bn(train, "bn1")(nn.Conv(64, (7, 7), (2, 2), padding=3, use_bias=False,
                                          name="conv1")(x)))
    x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    block = BLOCKS[self.block]
    for s, n in enumerate(self.layers):
      for b in range(n):
        stride = 2 if (s > 0 and b == 0) else 1
        x = block(64 * 2 ** s, stride, name=f"layer{s + 1}_{b}")(x, train)
    x = jnp.mean(x, axis=(1, 2))
    if self.num_outputs is not None:
      x = nn.Dense(self.num_outputs, name="fc")(x)
    return x


def decompose_flame_code(code_bf: jax.Array) -> dict[str, jax.Array]:
  """DECA's `decompose_code`: the (B, 236) code -> shape, tex, exp, pose, cam, light
  (light kept flat, (B, 27))."""
  out, start = {}, 0
  for name, n in FLAME_SPLIT:
    out[name] = code_bf[:, start:start + n]
    start += n
  return out


class FlameEncoder(nn.Module):
  """DECA's `E_flame` on [0, 1] RGB; returns the FLAME expression coefficients at
  `exp_channels` (all 50 when None), the channels L_eye compares.

  The paper names no channels ("the eyebrow expression channels of a 3DMM
  regressor"); the importer reads them off the FLAME model (`interop.flame`).
  `method="code"` returns the whole (B, 236) code.
  """
  exp_channels: Sequence[int] | None = None
  input_size: int | None = 224

  def setup(self):
    self.encoder = ResNet((3, 4, 6, 3), "bottleneck", None, self.input_size, "none")
    self.layers_0 = nn.Dense(1024)
    self.layers_2 = nn.Dense(FLAME_CODE_SIZE)

  def code(self, x01: jax.Array, train: bool = False) -> jax.Array:
    return self.layers_2(nn.relu(self.layers_0(self.encoder(x01, train))))

  def __call__(self, x01: jax.Array, train: bool = False) -> jax.Array:
    exp = decompose_flame_code(self.code(x01, train))["exp"]
    if self.exp_channels is None:
      return exp
    return exp[:, np.asarray(self.exp_channels, np.int32)]

