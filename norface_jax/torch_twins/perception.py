"""PyTorch twins of the stage-1 perception networks (`norface_jax.models.perception`).

Plain PyTorch (no JAX). Like the Flax modules they take NCHW RGB images in [0, 1],
resize to `input_size` if one is set (bilinear, no antialiasing, as `resize_to`) and
normalise inside:

- `VGGFeatures`: torchvision's VGG `features` stack (`features.{i}.weight/bias`, the
  keys of a torchvision VGG state_dict without its classifier), ImageNet mean/std;
  returns the ReLU outputs of the last `num_outputs` convs (what L_perc compares).
- `IResNet`: insightface's ArcFace backbone (`conv1`, `bn1`, `prelu`,
  `layer{s}.{b}.{bn1, conv1, bn2, prelu, conv2, bn3, downsample.0, downsample.1}`,
  `bn2`, `fc`, `features`), input (x - 0.5) / 0.5; configurable depths and widths, and
  `final_bn=False` for the regressors (landmarks, expression, eyebrow) of the
  SynthFACS versions. The fc reads the flattened (C, H, W) map, so `input_size`
  fixes its width, (input_size / 16)^2 * widths[-1].
- `ConvClassifier`: the VGG-style evaluation net (`conv_{i}` at its cfg index, `out`),
  input x * 2 - 1, head "gap" (mean over positions) or "flatten" (the map flattened in
  the Flax (H, W, C) order, so `out.weight` is the Flax kernel transposed); "flatten"
  needs the side the net sees (`input_size`, else `image_size`). With `exp_arch="conv"`
  it is also the expression embedding behind L_exp.

- `FAN`: face-alignment's 2D-FAN (`conv1`, `bn1`, `conv2..4`, per stack `m{i}`,
  `top_m_{i}`, `conv_last{i}`, `bn_end{i}`, `l{i}`, `bl{i}`, `al{i}`), [0, 1] input;
  returns every stack's 68 heatmaps.
- `ResNet`: torchvision's ResNet (BasicBlock or Bottleneck; `conv1`, `bn1`,
  `layer{1..4}.{b}.*`, optional `fc`), global average pool, ImageNet mean/std or none.
- `FlameEncoder`: DECA's `E_flame` (`encoder.` ResNet-50, `layers.0`, `layers.2`),
  [0, 1] input, the (B, 236) FLAME code.

`interop.torch_perception` maps the Flax variables to these state_dicts and back.
Shape letters: B batch, C channels, H/W spatial.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

VGG19_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
             512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resize_to(x: torch.Tensor, size: int | None) -> torch.Tensor:
  """Bilinear resize of NCHW images to (size, size) (no antialiasing), or as they are."""
  if size is None or tuple(x.shape[2:]) == (size, size):
    return x
  return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                       antialias=False)


def make_vgg_layers(cfg: Sequence[Any], in_channels: int = 3) -> nn.Sequential:
  """torchvision's `vgg.make_layers(cfg)` without batch norm: conv, ReLU, [max pool]."""
  layers: list[nn.Module] = []
  c = in_channels
  for v in cfg:
    if v == "M":
      layers.append(nn.MaxPool2d(2, 2))
    else:
      layers += [nn.Conv2d(c, int(v), 3, padding=1), nn.ReLU(inplace=False)]
      c = int(v)
  return nn.Sequential(*layers)


class VGGFeatures(nn.Module):
  """VGG `features`; forward returns the ReLU maps after the last `num_outputs` convs."""

  def __init__(self, cfg: Sequence[Any] = VGG19_CFG, num_outputs: int = 2,
               input_size: int | None = None):
    super().__init__()
    self.features = make_vgg_layers(cfg)
    self.input_size = input_size
    convs = [i for i, m in enumerate(self.features) if isinstance(m, nn.Conv2d)]
    self.taps = tuple(i + 1 for i in convs[-num_outputs:])  # the ReLU after each conv
    self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1),
                         persistent=False)
    self.register_buffer("std", torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1),
                         persistent=False)

  def forward(self, x01: torch.Tensor) -> list[torch.Tensor]:
    x = (resize_to(x01.float(), self.input_size) - self.mean) / self.std
    outs = []
    for i, layer in enumerate(self.features):
      x = layer(x)
      if i in self.taps:
        outs.append(x)
        if len(outs) == len(self.taps):
          break
    return outs


class IBasicBlock(nn.Module):
  """insightface IBasicBlock: bn1, conv1, bn2, prelu, conv2(stride), bn3 (+ downsample)."""

  def __init__(self, inplanes: int, planes: int, stride: int = 1,
               downsample: nn.Module | None = None):
    super().__init__()
    self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-5)
    self.conv1 = nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
    self.prelu = nn.PReLU(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
    self.downsample = downsample

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
    return out + (self.downsample(x) if self.downsample is not None else x)


class IResNet(nn.Module):
  """insightface `iresnet` (iresnet50: layers (3, 4, 14, 3), widths 64..512) on [0, 1] input.

  The first block of every stage has stride 2 and a 1x1 downsample, as the Flax
  `IResNet` (whose stages always change resolution).
  """

  def __init__(self, layers: Sequence[int] = (3, 4, 14, 3),
               widths: Sequence[int] = (64, 128, 256, 512), num_features: int = 512,
               final_bn: bool = True, input_size: int = 112):
    super().__init__()
    if input_size % 16:
      raise ValueError(f"input_size must be divisible by 16, got {input_size}")
    self.input_size = input_size
    self.inplanes = widths[0]
    self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(widths[0], eps=1e-5)
    self.prelu = nn.PReLU(widths[0])
    for i, (n, w) in enumerate(zip(layers, widths)):
      setattr(self, f"layer{i + 1}", self._make_layer(w, n))
    self.num_stages = len(layers)
    self.bn2 = nn.BatchNorm2d(widths[-1], eps=1e-5)
    self.fc = nn.Linear(widths[-1] * (input_size // 2 ** len(layers)) ** 2, num_features)
    self.features = nn.BatchNorm1d(num_features, eps=1e-5) if final_bn else None

  def _make_layer(self, planes: int, blocks: int) -> nn.Sequential:
    down = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, 2, bias=False),
                         nn.BatchNorm2d(planes, eps=1e-5))
    mods = [IBasicBlock(self.inplanes, planes, 2, down)]
    self.inplanes = planes
    mods += [IBasicBlock(planes, planes) for _ in range(1, blocks)]
    return nn.Sequential(*mods)

  def forward(self, x01: torch.Tensor) -> torch.Tensor:
    x = (resize_to(x01.float(), self.input_size) - 0.5) / 0.5
    x = self.prelu(self.bn1(self.conv1(x)))
    for i in range(self.num_stages):
      x = getattr(self, f"layer{i + 1}")(x)
    x = self.fc(torch.flatten(self.bn2(x), 1))
    return self.features(x) if self.features is not None else x


class ConvClassifier(nn.Module):
  """VGG-style conv stack (3x3 convs + ReLU, 2x2 max pools) and a linear output."""

  def __init__(self, cfg: Sequence[Any] = (32, "M", 64, "M", 128, "M", 128), num_outputs: int = 1,
               input_size: int | None = None, head: str = "gap", image_size: int | None = None):
    super().__init__()
    if head not in ("gap", "flatten"):
      raise ValueError(f"ConvClassifier head={head!r}: expected 'gap' or 'flatten'")
    self.cfg, self.input_size, self.head = tuple(cfg), input_size, head
    c = 3
    for i, v in enumerate(self.cfg):
      if v != "M":
        self.add_module(f"conv_{i}", nn.Conv2d(c, int(v), 3, padding=1))
        c = int(v)
    features = c
    if head == "flatten":
      side = input_size or image_size
      if side is None:
        raise ValueError("head='flatten' needs input_size or image_size")
      side //= 2 ** sum(v == "M" for v in self.cfg)
      features = c * side * side
    self.out = nn.Linear(features, num_outputs)

  def forward(self, x01: torch.Tensor) -> torch.Tensor:
    x = resize_to(x01.float(), self.input_size) * 2.0 - 1.0
    for i, v in enumerate(self.cfg):
      x = F.max_pool2d(x, 2, 2) if v == "M" else F.relu(getattr(self, f"conv_{i}")(x))
    if self.head == "gap":
      x = x.mean(dim=(2, 3))
    else:
      x = x.permute(0, 2, 3, 1).flatten(1)  # The Flax (H, W, C) order.
    return self.out(x)


class FANConvBlock(nn.Module):
  """face-alignment ConvBlock: BN-ReLU-conv3x3 x3 (out/2, out/4, out/4), concatenated,
  plus the input or `downsample` (BN, ReLU, 1x1 conv)."""

  def __init__(self, in_planes: int, out_planes: int):
    super().__init__()
    half, quarter = out_planes // 2, out_planes // 4
    self.bn1 = nn.BatchNorm2d(in_planes)
    self.conv1 = nn.Conv2d(in_planes, half, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(half)
    self.conv2 = nn.Conv2d(half, quarter, 3, 1, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(quarter)
    self.conv3 = nn.Conv2d(quarter, quarter, 3, 1, 1, bias=False)
    self.downsample = None
    if in_planes != out_planes:
      self.downsample = nn.Sequential(nn.BatchNorm2d(in_planes), nn.ReLU(),
                                      nn.Conv2d(in_planes, out_planes, 1, 1, bias=False))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    o1 = self.conv1(F.relu(self.bn1(x)))
    o2 = self.conv2(F.relu(self.bn2(o1)))
    o3 = self.conv3(F.relu(self.bn3(o2)))
    res = self.downsample(x) if self.downsample is not None else x
    return torch.cat((o1, o2, o3), 1) + res


class HourGlass(nn.Module):
  """Depth-`depth` hourglass: `b1_{d}`, `b2_{d}`, `b2_plus_1`, `b3_{d}` ConvBlocks."""

  def __init__(self, depth: int = 4, features: int = 256):
    super().__init__()
    self.depth = depth
    for d in range(depth, 0, -1):
      self.add_module(f"b1_{d}", FANConvBlock(features, features))
      self.add_module(f"b2_{d}", FANConvBlock(features, features))
      if d == 1:
        self.add_module("b2_plus_1", FANConvBlock(features, features))
      self.add_module(f"b3_{d}", FANConvBlock(features, features))

  def _level(self, d: int, x: torch.Tensor) -> torch.Tensor:
    up1 = getattr(self, f"b1_{d}")(x)
    low = getattr(self, f"b2_{d}")(F.avg_pool2d(x, 2, stride=2))
    low = self._level(d - 1, low) if d > 1 else self.b2_plus_1(low)
    low = getattr(self, f"b3_{d}")(low)
    return up1 + F.interpolate(low, scale_factor=2, mode="nearest")

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self._level(self.depth, x)


class FAN(nn.Module):
  """face-alignment's FAN(num_modules) on [0, 1] NCHW RGB; forward returns the list of
  every stack's (B, 68, H/4, W/4) heatmaps."""

  def __init__(self, num_modules: int = 4, input_size: int | None = 256):
    super().__init__()
    self.num_modules, self.input_size = num_modules, input_size
    self.conv1 = nn.Conv2d(3, 64, 7, 2, 3)
    self.bn1 = nn.BatchNorm2d(64)
    self.conv2 = FANConvBlock(64, 128)
    self.conv3 = FANConvBlock(128, 128)
    self.conv4 = FANConvBlock(128, 256)
    for i in range(num_modules):
      self.add_module(f"m{i}", HourGlass(4, 256))
      self.add_module(f"top_m_{i}", FANConvBlock(256, 256))
      self.add_module(f"conv_last{i}", nn.Conv2d(256, 256, 1))
      self.add_module(f"bn_end{i}", nn.BatchNorm2d(256))
      self.add_module(f"l{i}", nn.Conv2d(256, 68, 1))
      if i < num_modules - 1:
        self.add_module(f"bl{i}", nn.Conv2d(256, 256, 1))
        self.add_module(f"al{i}", nn.Conv2d(68, 256, 1))

  def forward(self, x01: torch.Tensor) -> list[torch.Tensor]:
    x = F.relu(self.bn1(self.conv1(resize_to(x01.float(), self.input_size))))
    x = self.conv4(self.conv3(F.avg_pool2d(self.conv2(x), 2, stride=2)))
    previous, outputs = x, []
    for i in range(self.num_modules):
      ll = getattr(self, f"top_m_{i}")(getattr(self, f"m{i}")(previous))
      ll = F.relu(getattr(self, f"bn_end{i}")(getattr(self, f"conv_last{i}")(ll)))
      out = getattr(self, f"l{i}")(ll)
      outputs.append(out)
      if i < self.num_modules - 1:
        previous = previous + getattr(self, f"bl{i}")(ll) + getattr(self, f"al{i}")(out)
    return outputs


class BasicBlock(nn.Module):
  """torchvision BasicBlock: conv1 3x3(stride)/bn1/ReLU, conv2/bn2, + downsample, ReLU."""
  expansion = 1

  def __init__(self, inplanes: int, planes: int, stride: int = 1,
               downsample: nn.Module | None = None):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.downsample = downsample

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
    return F.relu(out + (self.downsample(x) if self.downsample is not None else x))


class Bottleneck(nn.Module):
  """torchvision Bottleneck (v1.5, stride on conv2): 1x1, 3x3, 1x1 to 4 * planes."""
  expansion = 4

  def __init__(self, inplanes: int, planes: int, stride: int = 1,
               downsample: nn.Module | None = None):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.downsample = downsample

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    out = F.relu(self.bn1(self.conv1(x)))
    out = F.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    return F.relu(out + (self.downsample(x) if self.downsample is not None else x))


class ResNet(nn.Module):
  """torchvision ResNet trunk, global average pool, optional `fc` (an embedding head)."""

  def __init__(self, layers: Sequence[int] = (3, 4, 6, 3), block: str = "bottleneck",
               num_outputs: int | None = None, input_size: int | None = 224,
               normalize: str = "imagenet"):
    super().__init__()
    cls = {"basic": BasicBlock, "bottleneck": Bottleneck}[block]
    self.input_size, self.normalize = input_size, normalize
    self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    inplanes = 64
    for s, n in enumerate(layers):
      planes, stride = 64 * 2 ** s, 1 if s == 0 else 2
      down = None
      if stride != 1 or inplanes != planes * cls.expansion:
        down = nn.Sequential(nn.Conv2d(inplanes, planes * cls.expansion, 1, stride, bias=False),
                             nn.BatchNorm2d(planes * cls.expansion))
      mods = [cls(inplanes, planes, stride, down)]
      inplanes = planes * cls.expansion
      mods += [cls(inplanes, planes) for _ in range(1, n)]
      setattr(self, f"layer{s + 1}", nn.Sequential(*mods))
    self.num_stages = len(layers)
    self.fc = nn.Linear(inplanes, num_outputs) if num_outputs is not None else None
    self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1),
                         persistent=False)
    self.register_buffer("std", torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1),
                         persistent=False)

  def forward(self, x01: torch.Tensor) -> torch.Tensor:
    x = resize_to(x01.float(), self.input_size)
    if self.normalize == "imagenet":
      x = (x - self.mean) / self.std
    x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
    for s in range(self.num_stages):
      x = getattr(self, f"layer{s + 1}")(x)
    x = x.mean(dim=(2, 3))
    return self.fc(x) if self.fc is not None else x


class FlameEncoder(nn.Module):
  """DECA's `E_flame`: ResNet-50 `encoder` (no normalisation), `layers` = Linear(2048,
  1024), ReLU, Linear(1024, 236). DECA pools with AvgPool2d(7), the global mean at
  its 224 px; this twin takes the global mean at any size."""

  def __init__(self, input_size: int | None = 224, outsize: int = 236):
    super().__init__()
    self.encoder = ResNet((3, 4, 6, 3), "bottleneck", None, input_size, "none")
    self.layers = nn.Sequential(nn.Linear(2048, 1024), nn.ReLU(), nn.Linear(1024, outsize))

  def forward(self, x01: torch.Tensor) -> torch.Tensor:
    return self.layers(self.encoder(x01))
