"""Parity of the PyTorch twins with the Flax networks (eval mode, float32).

Each network: random Flax params (perturbed so no router ties and no tiny head), the
state_dict from `interop.keymap`, `load_state_dict(strict=True)` into the twin, then the
same random inputs through both. The error measured is max|torch - jax| / max|jax|.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from norface_jax.interop import keymap  # pylint: disable=g-import-not-at-top
from norface_jax.models import classifier as classifier_lib
from norface_jax.models import discriminator as disc_lib
from norface_jax.models import mae as mae_lib
from norface_jax.models import normalizer as normalizer_lib
from norface_jax.models import vit as vit_lib
from norface_jax import torch_twins


def rel_err(a, b) -> float:
  return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(np.asarray(b))))


def perturb(params, seed=0, scale=0.05):
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(treedef, [
      x + scale * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)])


def to_nchw(x):
  return torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())


@pytest.mark.parametrize("scan", [False, True])
def test_vit_twin_matches_flax(scan):
  size = 32
  model = vit_lib.ViT("mu/8", scan=scan)
  x = jax.random.normal(jax.random.key(1), (3, size, size, 3))
  params = perturb(nn.unbox(model.init(jax.random.key(0), x, train=False)["params"]))
  ref = model.apply({"params": params}, x, train=False)
  twin = torch_twins.VisionTransformer("mu/8", img_size=size).eval()
  twin.load_state_dict({k: torch.from_numpy(v) for k, v in
                        keymap.vit_to_torch(params, size).items()}, strict=True)
  with torch.no_grad():
    out = twin(to_nchw(x)).numpy()
    other = twin(to_nchw(jnp.zeros((1, 48, 40, 3)) + x[:1, :1, :1])).numpy()  # another grid
  assert rel_err(out, ref) < 1e-5
  ref_other = model.apply({"params": params}, jnp.zeros((1, 48, 40, 3)) + x[:1, :1, :1],
                          train=False)
  assert rel_err(other, ref_other) < 1e-5


def test_vit_twin_learned_pos_matches_flax():
  """A learned table at its own grid and resampled (bicubic) for two other grids."""
  size = 32
  model = vit_lib.ViT("mu/8", pos_embed="learned")
  x = jax.random.normal(jax.random.key(1), (2, size, size, 3))
  params = perturb(nn.unbox(model.init(jax.random.key(0), x, train=False)["params"]), scale=0.5)
  assert params["pos_embedding"].shape == (1, 1 + 4 * 4, 32)
  twin = torch_twins.VisionTransformer("mu/8", img_size=size, pos_embed="learned").eval()
  sd = keymap.vit_to_torch(params, size)
  np.testing.assert_array_equal(sd["pos_embed"], params["pos_embedding"])
  twin.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
  for shape in ((size, size), (48, 48), (48, 40), (16, 16)):
    xs = jax.random.normal(jax.random.key(2), (2, *shape, 3))
    ref = model.apply({"params": params}, xs, train=False)
    with torch.no_grad():
      out = twin(to_nchw(xs)).numpy()
    err = rel_err(out, ref)
    print(f"ViT learned pos {shape}: max rel err {err:.2e}")
    assert err < 1e-5
  back = keymap.vit_from_torch(sd, num_heads=2, pos_embed="learned")
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(back)[0],
                          jax.tree.leaves(jax.tree.map(np.asarray, params))):
    np.testing.assert_allclose(a, b, rtol=0, atol=0, err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("kw", [dict(), dict(streams=("orig",), pool="gap"),
                                dict(num_experts=0), dict(use_input_moe=False, top_k=1),
                                dict(pos_embed="learned")])
def test_classifier_twin_matches_flax(kw):
  size = 32
  model = classifier_lib.NorfaceClassifier(encoder="mu/8", num_outputs=5, **kw)
  streams = kw.get("streams", ("orig", "norm"))
  x = jax.random.normal(jax.random.key(1), (4, size, size, 3))
  x_n = jax.random.normal(jax.random.key(2), (4, size, size, 3)) if "norm" in streams else None
  params = nn.unbox(model.init({"params": jax.random.key(0)}, x, x_n, train=False)["params"])
  params = perturb(params, scale=0.2)
  ref, _ = model.apply({"params": params}, x, x_n, train=False)
  twin = torch_twins.NorfaceClassifier(
      encoder="mu/8", img_size=size, num_outputs=5,
      **{k: v for k, v in kw.items()}).eval()
  sd = keymap.classifier_to_torch(jax.device_get(params), size)
  twin.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
  with torch.no_grad():
    out = twin(to_nchw(x), None if x_n is None else to_nchw(x_n)).numpy()
  err = rel_err(out, ref)
  print(f"F_cla {kw}: max rel err {err:.2e}")
  assert err < 1e-5


def test_normalizer_twin_matches_flax():
  """F_nor (mu/8 encoder, 3 decoder stages for patch 8) on [0, 1] images, and back."""
  size = 32
  model = normalizer_lib.Normalizer("mu/8", (16, 8, 8), emm_depth=2)
  k_o, k_t = jax.random.split(jax.random.key(1))
  x_o = jax.random.uniform(k_o, (3, size, size, 3))
  x_t = jax.random.uniform(k_t, (3, size, size, 3))
  params = nn.unbox(model.init(jax.random.key(0), x_o, x_t, train=False)["params"])
  params = jax.device_get(perturb(params, scale=0.1))
  ref = model.apply({"params": params}, x_o, x_t, train=False)
  twin = torch_twins.NorfaceNormalizer("mu/8", img_size=size, decoder_channels=(16, 8, 8),
                                       emm_depth=2).eval()
  sd = keymap.normalizer_to_torch(params, size)
  twin.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
  with torch.no_grad():
    out = twin(to_nchw(x_o), to_nchw(x_t)).numpy()
  assert out.shape == (3, 3, size, size)
  # Not saturated: the comparison is of the decoder's actual output.
  assert 0.05 < float(np.std(out)) and 0.0 < out.min() and out.max() < 1.0
  err = rel_err(out, np.asarray(ref).transpose(0, 3, 1, 2))
  print(f"F_nor: max rel err {err:.2e}")
  assert err < 1e-5
  back = keymap.normalizer_from_torch(sd, num_heads=2)
  assert jax.tree.structure(back) == jax.tree.structure(params)
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(back)[0], jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))


def test_discriminator_twin_matches_flax():
  """D_res, two scales, on an odd-sized second scale (SAME pooling pads asymmetrically)."""
  size = 36
  model = disc_lib.MultiScaleDiscriminator((8, 16), num_scales=2)
  k_t, k_n = jax.random.split(jax.random.key(2))
  x_t = jax.random.uniform(k_t, (2, size, size, 3))
  x_n = jax.random.uniform(k_n, (2, size, size, 3))
  params = jax.device_get(perturb(model.init(jax.random.key(0), x_t, x_n)["params"], scale=0.1))
  ref = model.apply({"params": params}, x_t, x_n)
  twin = torch_twins.MultiScaleDiscriminator((8, 16), num_scales=2).eval()
  sd = keymap.discriminator_to_torch(params)
  twin.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
  with torch.no_grad():
    out = twin(to_nchw(x_t), to_nchw(x_n))
  assert len(out) == len(ref) == 2
  for o, r in zip(out, ref):
    err = rel_err(o.numpy(), np.asarray(r).transpose(0, 3, 1, 2))
    print(f"D_res scale {r.shape}: max rel err {err:.2e}")
    assert err < 1e-5


def test_mae_twin_matches_flax():
  """MAE (mu/8 encoder, small decoder): the same mask, predictions and loss."""
  size, patch = 32, 8
  model = mae_lib.MAE("mu/8", decoder_width=16, decoder_depth=1, decoder_heads=2)
  x = jax.random.normal(jax.random.key(3), (2, size, size, 3))
  params = nn.unbox(model.init({"params": jax.random.key(0), "mask": jax.random.key(1)}, x,
                               train=False)["params"])
  params = jax.device_get(perturb(params, scale=0.1))
  out = model.apply({"params": params}, x, train=False, rngs={"mask": jax.random.key(4)})
  target = mae_lib.patch_targets(x, patch, True)
  ref_loss = mae_lib.reconstruction_loss(out["pred"], target, out["mask"])
  twin = torch_twins.MaskedAutoencoder("mu/8", img_size=size, decoder_width=16,
                                       decoder_depth=1, decoder_heads=2).eval()
  sd = keymap.mae_to_torch(params, size)
  twin.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
  # argsort(ids_restore) is the JAX shuffle, so the ranks as noise give the same mask.
  noise = torch.from_numpy(np.asarray(out["ids_restore"]).astype(np.float32))
  from norface_jax.torch_twins import mae as torch_mae
  with torch.no_grad():
    got = twin(to_nchw(x), noise=noise)
    loss = torch_mae.reconstruction_loss(
        got["pred"], torch_mae.patch_targets(to_nchw(x), patch), got["mask"])
  np.testing.assert_array_equal(got["mask"].numpy(), np.asarray(out["mask"]))
  err = rel_err(got["pred"].numpy(), out["pred"])
  print(f"MAE: max rel err {err:.2e}")
  assert err < 1e-5
  np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-5)


def test_twins_import_no_jax():
  import subprocess
  import sys
  code = ("import sys, norface_jax.torch_twins; "
          "bad = [m for m in sys.modules if m.split('.')[0] in ('jax', 'flax', 'optax')]; "
          "assert not bad, bad")
  subprocess.run([sys.executable, "-c", code], check=True)
