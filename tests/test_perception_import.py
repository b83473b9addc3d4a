"""Importers of the perception networks against randomly initialised PyTorch twins."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is the optional interop extra")
nn = torch.nn

import jax  # noqa: E402

from norface_jax.interop import torch_perception  # noqa: E402
from norface_jax.models import perception  # noqa: E402


def torch_vgg_features(cfg):
  """torchvision's `make_layers(cfg)` (no batch norm)."""
  layers, c = [], 3
  for v in cfg:
    if v == "M":
      layers.append(nn.MaxPool2d(2, 2))
    else:
      layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=False)]
      c = v
  return nn.Sequential(*layers)


class IBasicBlock(nn.Module):
  """insightface's IBasicBlock (written out here: the twin imports no insightface)."""

  def __init__(self, inplanes, planes, stride=1, downsample=None):
    super().__init__()
    self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-5)
    self.conv1 = nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
    self.prelu = nn.PReLU(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
    self.downsample = downsample

  def forward(self, x):
    out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
    return out + (self.downsample(x) if self.downsample is not None else x)


class IResNet(nn.Module):
  """insightface's iresnet with configurable widths (iresnet50: (3, 4, 14, 3), 64..512)."""

  def __init__(self, layers, widths, num_features, fc_scale):
    super().__init__()
    self.inplanes = widths[0]
    self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(widths[0], eps=1e-5)
    self.prelu = nn.PReLU(widths[0])
    for i, (n, w) in enumerate(zip(layers, widths)):
      setattr(self, f"layer{i + 1}", self._make_layer(w, n))
    self.bn2 = nn.BatchNorm2d(widths[-1], eps=1e-5)
    self.fc = nn.Linear(widths[-1] * fc_scale, num_features)
    self.features = nn.BatchNorm1d(num_features, eps=1e-5)
    self.n = len(layers)

  def _make_layer(self, planes, blocks):
    down = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, 2, bias=False),
                         nn.BatchNorm2d(planes, eps=1e-5))
    mods = [IBasicBlock(self.inplanes, planes, 2, down)]
    self.inplanes = planes
    mods += [IBasicBlock(planes, planes) for _ in range(1, blocks)]
    return nn.Sequential(*mods)

  def forward(self, x):
    x = self.prelu(self.bn1(self.conv1(x)))
    for i in range(self.n):
      x = getattr(self, f"layer{i + 1}")(x)
    x = torch.flatten(self.bn2(x), 1)
    return self.features(self.fc(x))


def randomise_bn(model, seed=0):
  """Non-trivial running statistics and affine terms, so BN really is tested."""
  g = torch.Generator().manual_seed(seed)
  for m in model.modules():
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
      m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
      m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
      m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
      m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    if isinstance(m, nn.PReLU):
      m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) * 0.5)


def test_vgg19_import_parity():
  torch.manual_seed(0)
  twin = torch_vgg_features(perception.VGG19_CFG).eval()
  x = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype(np.float32)
  mean, std = perception.IMAGENET_MEAN, perception.IMAGENET_STD
  xt = torch.from_numpy(((x - mean) / std).transpose(0, 3, 1, 2))
  with torch.no_grad():  # ReLU outputs after conv 32 and conv 34 (indices 33, 35).
    want = [twin[:34](xt).numpy(), twin[:36](xt).numpy()]
  variables = torch_perception.import_vgg(
      {"classifier.0.weight": torch.zeros(1),
       **{f"features.{k}": v for k, v in twin.state_dict().items()}})
  got = perception.VGGFeatures().apply(variables, x)
  assert len(got) == 2
  for g, w in zip(got, want):
    np.testing.assert_allclose(np.asarray(g), w.transpose(0, 2, 3, 1), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("layers,widths,size", [((3, 4, 14, 3), (64, 128, 256, 512), 112),
                                                ((1, 2, 1, 1), (8, 16, 16, 32), 64)])
def test_iresnet_import_parity(layers, widths, size):
  torch.manual_seed(1)
  twin = IResNet(layers, widths, 64, (size // 16) ** 2)
  randomise_bn(twin)
  twin.eval()
  x = np.random.default_rng(1).uniform(size=(2, size, size, 3)).astype(np.float32)
  with torch.no_grad():
    want = twin(torch.from_numpy((x - 0.5) / 0.5).permute(0, 3, 1, 2)).numpy()
  variables = torch_perception.import_iresnet(twin.state_dict())
  model = perception.IResNet(layers, widths, 64, input_size=size)
  # The imported tree has exactly the Flax model's structure and shapes.
  expected = jax.eval_shape(model.init, jax.random.key(0), x)
  assert jax.tree.map(lambda a: a.shape, expected) == jax.tree.map(np.shape, variables)
  got = np.asarray(model.apply(variables, x))
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-3)


def test_importers_reject_wrong_layouts():
  with pytest.raises(KeyError, match="torchvision VGG"):
    torch_perception.import_vgg({"conv1.weight": np.zeros((1, 1, 1, 1))})
  with pytest.raises(KeyError, match="iresnet"):
    torch_perception.import_iresnet({"features.0.weight": np.zeros(2), "features.0.bias": np.zeros(2)})
