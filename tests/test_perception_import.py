"""Importers (and exporters) of the perception networks against randomly initialised
PyTorch twins (`torch_twins.perception`), and the perception_dir built from such
weight files (`interop.perception_import`)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is the optional interop extra")
nn = torch.nn

import jax  # noqa: E402

from norface_jax.interop import torch_perception  # noqa: E402
from norface_jax.models import fan, perception, resnet  # noqa: E402
from norface_jax.torch_twins import perception as twins  # noqa: E402
from norface_jax.torch_twins.perception import ConvClassifier, IResNet, VGGFeatures  # noqa: E402
from norface_jax.evaluation import consistency  # noqa: E402
from norface_jax.interop import perception_import  # noqa: E402
from norface_jax.training import perception_nets  # noqa: E402


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


def np_soft_argmax(heatmaps_bkhw, temperature):
  """NumPy reference of `fan.soft_argmax` on torch-layout (B, K, H, W) heatmaps."""
  b, k, h, w = heatmaps_bkhw.shape
  z = heatmaps_bkhw.reshape(b, k, h * w).astype(np.float64) / temperature
  p = np.exp(z - z.max(-1, keepdims=True))
  p = (p / p.sum(-1, keepdims=True)).reshape(b, k, h, w)
  x = (p.sum(2) * ((np.arange(w) + 0.5) / w)).sum(-1)
  y = (p.sum(3) * ((np.arange(h) + 0.5) / h)).sum(-1)
  return np.stack([x, y], -1)


def _nhwc_to_nchw(x):
  return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def test_fan_import_parity(num_modules=2):
  """face-alignment FAN at 64 px, 2 stacks (so `bl0`/`al0` feed the second): heatmaps of
  every stack and the soft-argmax landmarks. (1 stack: the end-to-end test; 2DFAN-4's
  4-stack layout: `test_new_importers_reject_wrong_layouts`.)"""
  torch.manual_seed(3)
  twin = twins.FAN(num_modules, input_size=64)
  randomise_bn(twin, seed=3)
  twin.eval()
  x = np.random.default_rng(3).uniform(size=(2, 64, 64, 3)).astype(np.float32)
  with torch.no_grad():
    want = [h.numpy() for h in twin(_nhwc_to_nchw(x))]
  assert len(want) == num_modules and want[-1].shape == (2, 68, 16, 16)
  variables = torch_perception.import_fan(twin.state_dict())
  model = fan.FAN(num_modules, input_size=64, output="heatmaps")
  expected = jax.eval_shape(model.init, jax.random.key(0), x)
  assert jax.tree.map(lambda a: a.shape, expected) == jax.tree.map(np.shape, variables)
  got = jax.jit(model.apply)(variables, x)
  for g, w in zip(got, want):
    scale = np.abs(w).max()
    np.testing.assert_allclose(np.asarray(g).transpose(0, 3, 1, 2) / scale, w / scale, atol=1e-4)
  # The landmarks L_lm reads: the soft-argmax of the last stack, here at a temperature
  # scaled to these random heatmaps' range so the softmax is neither flat nor one-hot.
  t = float(want[-1].std())
  lm = np.asarray(fan.soft_argmax(got[-1], t))  # FAN(output="landmarks"): end-to-end test.
  assert lm.shape == (2, 68, 2) and lm.min() > 0 and lm.max() < 1
  np.testing.assert_allclose(lm, np_soft_argmax(want[-1], t), atol=1e-4)


def test_deca_flame_import_parity():
  """DECA E_flame (ResNet-50 `encoder.` + `layers`) at 64 px: the 236-number FLAME code,
  and the expression channels the eyebrow loss reads."""
  torch.manual_seed(4)
  twin = twins.FlameEncoder(input_size=64)
  randomise_bn(twin, seed=4)
  twin.eval()
  x = np.random.default_rng(4).uniform(size=(2, 64, 64, 3)).astype(np.float32)
  with torch.no_grad():
    want = twin(_nhwc_to_nchw(x)).numpy()
  assert want.shape == (2, resnet.FLAME_CODE_SIZE)
  variables = torch_perception.import_deca_flame(twin.state_dict())
  model = resnet.FlameEncoder(input_size=64)
  expected = jax.eval_shape(model.init, jax.random.key(0), x)
  assert jax.tree.map(lambda a: a.shape, expected) == jax.tree.map(np.shape, variables)
  code = np.asarray(jax.jit(lambda v, a: model.apply(v, a, method="code"))(variables, x))
  scale = np.abs(want).max()
  np.testing.assert_allclose(code / scale, want / scale, atol=1e-4)
  # DECA's split: shape 100, tex 50, then exp = code[:, 150:200], ..., light the last 27.
  # (`FlameEncoder.__call__`'s channel pick is checked in the end-to-end test.)
  parts = resnet.decompose_flame_code(code)
  np.testing.assert_array_equal(parts["exp"][:, [0, 7, 49]], code[:, [150, 157, 199]])
  np.testing.assert_array_equal(parts["light"], code[:, -27:])


def test_resnet18_embedding_import_parity(normalize="imagenet"):
  """torchvision ResNet-18 (BasicBlock) with a Linear embedding head as `fc`, 64 px
  (normalize="none" and the Bottleneck: DECA's encoder, above)."""
  torch.manual_seed(5)
  twin = twins.ResNet((2, 2, 2, 2), "basic", 16, input_size=64, normalize=normalize)
  randomise_bn(twin, seed=5)
  twin.eval()
  x = np.random.default_rng(5).uniform(size=(2, 64, 64, 3)).astype(np.float32)
  with torch.no_grad():
    want = twin(_nhwc_to_nchw(x)).numpy()
  sd = twin.state_dict()
  assert torch_perception.resnet_spec(sd) == {"layers": [2, 2, 2, 2], "block": "basic",
                                              "num_outputs": 16}
  variables = torch_perception.import_resnet(sd)
  model = resnet.ResNet((2, 2, 2, 2), "basic", 16, input_size=64, normalize=normalize)
  expected = jax.eval_shape(model.init, jax.random.key(0), x)
  assert jax.tree.map(lambda a: a.shape, expected) == jax.tree.map(np.shape, variables)
  np.testing.assert_allclose(np.asarray(jax.jit(model.apply)(variables, x)), want,
                             atol=1e-4, rtol=1e-4)


def test_new_importers_reject_wrong_layouts():
  torch.manual_seed(6)
  r18 = twins.ResNet((2, 2, 2, 2), "basic", 8).state_dict()
  with pytest.raises(KeyError, match="face-alignment FAN"):
    torch_perception.import_fan(r18)
  fan_sd = twins.FAN(4).state_dict()  # 2DFAN-4's layout imports as it is ...
  assert torch_perception.fan_num_modules(fan_sd) == 4
  assert "l3" in torch_perception.import_fan(fan_sd)["params"]
  with pytest.raises(KeyError, match="torchvision ResNet"):
    torch_perception.import_resnet(fan_sd)
  with pytest.raises(KeyError, match="DECA E_flame"):
    torch_perception.import_deca_flame(r18)
  broken = {k: v for k, v in fan_sd.items() if not k.startswith("m0.b3_2.")}
  with pytest.raises(KeyError, match=r"face-alignment FAN.*missing \['batch_stats/m0/b3_2/bn1/mean"):
    torch_perception.import_fan(broken)
  grown = dict(fan_sd, **{"l0.weight": torch.zeros(17, 256, 1, 1)})  # 17 heatmaps, not 68
  with pytest.raises(KeyError, match=r"wrong shapes \['params/l0/kernel: \(1, 1, 256, 17\) != \(1, 1, 256, 68"):
    torch_perception.import_fan(grown)


def _save_twins(tmp_path):
  """Small random twins of the five loss nets saved as the public files are shipped."""
  torch.manual_seed(7)
  nets = {"vgg": VGGFeatures((8, "M", 16, 16, "M", 16)),
          "identity": IResNet((1, 1, 1, 1), (8, 16, 16, 32), 24, input_size=32),
          "landmarks": twins.FAN(1, input_size=64),
          "expression": twins.ResNet((2, 2, 2, 2), "basic", 12, input_size=64),
          "eyebrow": twins.FlameEncoder(input_size=64)}
  for i, m in enumerate(nets.values()):
    randomise_bn(m, seed=10 + i)
    m.eval()
  paths = {n: str(tmp_path / f) for n, f in (
      ("vgg", "vgg.pth"), ("identity", "arcface.safetensors"), ("landmarks", "2DFAN.pth.tar"),
      ("expression", "emb.pt"), ("eyebrow", "deca_model.tar"))}
  import safetensors.torch
  torch.save(nets["vgg"].state_dict(), paths["vgg"])
  safetensors.torch.save_file(nets["identity"].state_dict(), paths["identity"])
  torch.save({"state_dict": {f"module.{k}": v for k, v in nets["landmarks"].state_dict().items()}},
             paths["landmarks"])  # A DataParallel checkpoint in a `state_dict` wrapper.
  torch.save(nets["expression"].state_dict(), paths["expression"])
  torch.save({"E_flame": nets["eyebrow"].state_dict(), "E_detail": {}}, paths["eyebrow"])
  return nets, paths


def write_flame(tmp_path, brow=None, other=None):
  """A FLAME-like model pickle (arrays as chumpy objects, as FLAME ships them) and a DECA
  landmark embedding: a 2-triangle-per-landmark mesh where expression channel e moves
  the eyebrow landmarks' vertices by `brow[e]` and the others by `other[e]`."""
  import pickle
  import sys
  import types
  brow = brow or {}
  other = other or {}
  n_lm, v = 68, 68 * 3
  faces = np.arange(v).reshape(n_lm, 3)
  dirs = np.zeros((v, 3, 300 + 100))
  for lm in range(n_lm):
    table = brow if 17 <= lm <= 26 else other
    for e, amount in table.items():
      dirs[faces[lm], 1, 300 + e] = amount  # Straight up, every vertex of its triangle.
  chumpy = types.ModuleType("chumpy")
  ch = types.ModuleType("chumpy.ch")

  class Ch:
    def __init__(self, x):
      self.x = x

    def __reduce__(self):
      return (Ch, (None,), {"x": self.x})

  Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
  ch.Ch = Ch
  sys.modules.update({"chumpy": chumpy, "chumpy.ch": ch})
  try:
    with open(tmp_path / "generic_model.pkl", "wb") as f:
      pickle.dump({"v_template": Ch(np.zeros((v, 3))), "f": faces, "shapedirs": Ch(dirs)}, f,
                  protocol=2)
  finally:
    del sys.modules["chumpy"], sys.modules["chumpy.ch"]
  np.save(tmp_path / "landmark_embedding.npy",
          {"full_lmk_faces_idx": np.arange(n_lm)[None], "full_lmk_bary_coords":
           np.full((1, n_lm, 3), 1 / 3)}, allow_pickle=True)
  return str(tmp_path / "generic_model.pkl"), str(tmp_path / "landmark_embedding.npy")


def test_eyebrow_channels_are_read_off_flame(tmp_path):
  """Brow effects by hand: channel 5 lifts the brow landmarks by 2, channel 7 by 1, and
  channel 0 (a large mouth movement) not at all."""
  from norface_jax.interop import flame
  model, emb = write_flame(tmp_path, brow={5: 2.0, 7: 1.0}, other={0: 10.0, 7: 3.0})
  loaded = flame.load_flame(model)
  assert loaded["shapedirs"].shape == (204, 3, 400)
  effects = flame.brow_effects(loaded, *flame.load_landmark_embedding(emb))
  np.testing.assert_allclose(effects[[0, 5, 7]], [0.0, 2.0, 1.0])
  assert np.count_nonzero(effects) == 2
  assert flame.eyebrow_channels(effects, 0.9) == [5, 7]   # 2/3 of the effect is not 90%
  assert flame.eyebrow_channels(effects, 0.6) == [5]
  with pytest.raises(ValueError, match="not a FLAME model pickle"):
    flame.load_flame(emb)


def test_import_perception_dir_end_to_end(tmp_path):
  """Weight files -> perception_dir -> `perception_nets.load(P).functions()`: the five
  loss outputs equal the twins' (landmarks: the NumPy soft-argmax of their heatmaps).
  L_eye's channels come, by default, from the FLAME model (here: 3 and 4 move the brows)."""
  nets, paths = _save_twins(tmp_path)
  with pytest.raises(ValueError, match="generic_model.pkl"):
    perception_import.import_perception(paths)  # Neither FLAME nor channels given.
  model, emb = write_flame(tmp_path, brow={3: 1.0, 4: 1.0, 9: 0.1}, other={0: 5.0})
  out = perception_import.import_to_dir(
      paths, str(tmp_path / "P"), flame=model, flame_landmarks=emb, landmark_temperature=0.5,
      input_sizes={"landmarks": 64, "expression": 64, "eyebrow": 64})
  loaded = perception_nets.load(out)
  chosen = loaded.meta["eyebrow_channels"]
  assert chosen["rule"] == "flame brow effect" and chosen["channels"] == [3, 4]
  assert loaded.meta["imported"]["eyebrow"]["exp_channels"] == [3, 4]
  assert sorted(loaded.modules) == sorted(perception_import.NETS)  # no eval_au / eval_id
  assert loaded.meta["kind"] == "imported"
  # Stage 1's evaluation against independent networks has none to use: it skips itself.
  assert consistency.evaluate_consistency(None, None, loaded, None, None, 1) == {}
  fns = loaded.functions()
  x = np.random.default_rng(8).uniform(size=(2, 48, 48, 3)).astype(np.float32)
  xt = _nhwc_to_nchw(x)
  got = {n: jax.device_get(jax.jit(fns[n])(loaded.variables[n], x)) for n in perception_import.NETS}
  with torch.no_grad():
    want_vgg = [w.numpy().transpose(0, 2, 3, 1) for w in nets["vgg"](xt)]
    want_id = nets["identity"](xt).numpy()
    heat = nets["landmarks"](xt)[-1].numpy()
    want_exp = nets["expression"](xt).numpy()
    want_eye = nets["eyebrow"](xt).numpy()[:, [153, 154]]
  assert len(got["vgg"]) == 2
  for g, w in zip(got["vgg"], want_vgg):
    np.testing.assert_allclose(g, w, atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(got["identity"], want_id, atol=1e-4, rtol=1e-3)
  assert got["landmarks"].shape == (2, 68, 2)
  np.testing.assert_allclose(got["landmarks"], np_soft_argmax(heat, 0.5), atol=1e-4)
  np.testing.assert_allclose(got["expression"], want_exp, atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(got["eyebrow"], want_eye, atol=1e-4, rtol=1e-3)


def test_import_perception_names_the_bad_file(tmp_path):
  _, paths = _save_twins(tmp_path)
  with pytest.raises(FileNotFoundError, match=r"landmarks weights .*nope\.pth.*face-alignment FAN"):
    perception_import.import_perception(dict(paths, landmarks=str(tmp_path / "nope.pth")),
                                        eyebrow_channels="all")
  # The ResNet-18 file given as DECA's: the message names that file and DECA's layout.
  with pytest.raises(KeyError, match=r"eyebrow weights .*emb\.pt.*DECA E_flame"):
    perception_import.import_perception(dict(paths, eyebrow=paths["expression"]),
                                        eyebrow_channels="all")
