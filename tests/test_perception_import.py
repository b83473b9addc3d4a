"""Importers (and exporters) of the perception networks against randomly initialised
PyTorch twins (`torch_twins.perception`)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is the optional interop extra")
nn = torch.nn

import jax  # noqa: E402

from norface_jax.interop import torch_perception  # noqa: E402
from norface_jax.models import perception  # noqa: E402
from norface_jax.torch_twins.perception import ConvClassifier, IResNet, VGGFeatures  # noqa: E402


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
  twin = VGGFeatures(perception.VGG19_CFG).eval()
  x = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype(np.float32)
  mean, std = perception.IMAGENET_MEAN, perception.IMAGENET_STD
  xt = torch.from_numpy(((x - mean) / std).transpose(0, 3, 1, 2))
  with torch.no_grad():  # ReLU outputs after conv 32 and conv 34 (indices 33, 35).
    want = [twin.features[:34](xt).numpy(), twin.features[:36](xt).numpy()]
    # The twin's own forward ([0, 1] input, normalised inside) taps the same maps.
    for got_t, w in zip(twin(torch.from_numpy(x.transpose(0, 3, 1, 2))), want):
      np.testing.assert_allclose(got_t.numpy(), w, atol=1e-4, rtol=1e-4)
  variables = torch_perception.import_vgg(
      {"classifier.0.weight": torch.zeros(1),
       **{k: v for k, v in twin.state_dict().items()}})
  got = perception.VGGFeatures().apply(variables, x)
  assert len(got) == 2
  for g, w in zip(got, want):
    np.testing.assert_allclose(np.asarray(g), w.transpose(0, 2, 3, 1), atol=1e-4, rtol=1e-4)
  back = torch_perception.export_vgg(variables)
  assert sorted(back) == sorted(twin.state_dict())
  for k, v in twin.state_dict().items():
    np.testing.assert_array_equal(back[k], v.numpy(), err_msg=k)


@pytest.mark.parametrize("layers,widths,size", [((3, 4, 14, 3), (64, 128, 256, 512), 112),
                                                ((1, 2, 1, 1), (8, 16, 16, 32), 64)])
def test_iresnet_import_parity(layers, widths, size):
  torch.manual_seed(1)
  twin = IResNet(layers, widths, 64, input_size=size)
  randomise_bn(twin)
  twin.eval()
  x = np.random.default_rng(1).uniform(size=(2, size, size, 3)).astype(np.float32)
  with torch.no_grad():  # The twin normalises [0, 1] input as (x - 0.5) / 0.5 itself.
    want = twin(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
  variables = torch_perception.import_iresnet(twin.state_dict())
  model = perception.IResNet(layers, widths, 64, input_size=size)
  # The imported tree has exactly the Flax model's structure and shapes.
  expected = jax.eval_shape(model.init, jax.random.key(0), x)
  assert jax.tree.map(lambda a: a.shape, expected) == jax.tree.map(np.shape, variables)
  got = np.asarray(model.apply(variables, x))
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-3)
  back = torch_perception.export_iresnet(variables)
  assert sorted(back) == sorted(twin.state_dict())
  for k, v in twin.state_dict().items():
    np.testing.assert_array_equal(back[k], v.numpy(), err_msg=k)


@pytest.mark.parametrize("head", ["gap", "flatten"])
def test_conv_classifier_twin_parity(head):
  """Flax ConvClassifier -> `export_conv_classifier` -> the twin: the same outputs."""
  cfg, size = (8, "M", 16, "M", 16), 32
  x = np.random.default_rng(2).uniform(size=(2, size, size, 3)).astype(np.float32)
  model = perception.ConvClassifier(cfg, 5, head=head)
  variables = model.init(jax.random.key(0), x)
  twin = ConvClassifier(cfg, 5, head=head, image_size=size).eval()
  sd = torch_perception.export_conv_classifier(variables)
  twin.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
  with torch.no_grad():
    got = twin(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
  np.testing.assert_allclose(got, np.asarray(model.apply(variables, x)), atol=1e-5, rtol=1e-4)


def test_importers_reject_wrong_layouts():
  with pytest.raises(KeyError, match="torchvision VGG"):
    torch_perception.import_vgg({"conv1.weight": np.zeros((1, 1, 1, 1))})
  with pytest.raises(KeyError, match="iresnet"):
    torch_perception.import_iresnet({"features.0.weight": np.zeros(2), "features.0.bias": np.zeros(2)})
