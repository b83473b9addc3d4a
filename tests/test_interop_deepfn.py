"""Parity of the DeepFN PyTorch twins (autoencoder, LeNet-5) with the Flax networks.

Random Flax params (perturbed so biases are non-zero and nothing is symmetric), the
state_dict from `interop.keymap`, `load_state_dict(strict=True)`, the same random inputs
through both; error = max|torch - jax| / max|jax| (float32). Also: the keymap round
trip, the export from a saved params file, and the twins importing no JAX.
"""

import json
import os

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from norface_jax import torch_twins  # pylint: disable=g-import-not-at-top
from norface_jax.deepfn import autoencoder as ae_lib
from norface_jax.deepfn import lenet as lenet_lib
from norface_jax.deepfn import saved
from norface_jax.interop import export
from norface_jax.interop import keymap

AE_KW = dict(widths=[4, 8, 8, 16], latent=16, image_size=64)  # 2x2 bottleneck grid.


def rel_err(a, b) -> float:
  a, b = np.asarray(a), np.asarray(b)
  return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def perturb(params, seed=0, scale=0.1):
  """Params + scale * N(0, 1) noise (host NumPy: no per-shape compiles)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda x: (np.asarray(x) + scale * rng.standard_normal(x.shape)).astype(np.float32), params)


def nchw(x):
  return torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())


def nhwc(t):
  return t.numpy().transpose(0, 2, 3, 1)


def load_twin(name, kwargs, sd):
  twin = torch_twins.TWINS[name](**kwargs).eval()
  twin.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
  return twin


def assert_same_tree(a, b):
  fa, fb = jax.tree_util.tree_flatten_with_path(a)[0], jax.tree_util.tree_flatten_with_path(b)[0]
  assert [p for p, _ in fa] == [p for p, _ in fb]
  for (p, x), (_, y) in zip(fa, fb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=str(p))


@pytest.fixture(scope="module")
def ae_setup():
  s = AE_KW["image_size"]
  model = ae_lib.AutoEncoder(widths=tuple(AE_KW["widths"]), latent=AE_KW["latent"])
  x = jax.random.uniform(jax.random.key(1), (3, s, s, 1))
  y = jax.random.uniform(jax.random.key(2), (3, s, s, 1))
  params = perturb(model.init(jax.random.key(0), x, y)["params"])
  return model, params, np.asarray(x), np.asarray(y)


def test_autoencoder_twin_matches_flax(ae_setup):
  model, params, x, y = ae_setup
  sd = keymap.deepfn_ae_to_torch(params)
  twin = load_twin("DeepFNAutoEncoder", AE_KW, sd)
  ref_x, ref_y = model.apply({"params": params}, x, y)
  ref_n = model.apply({"params": params}, x, method=ae_lib.AutoEncoder.normalize)
  ref_z = model.apply({"params": params}, x, method=lambda m, v: m.encoder(v))
  with torch.no_grad():
    out_x, out_y = twin(nchw(x), nchw(y))
    out_n = twin.normalize(nchw(x))
    out_z = twin.encoder(nchw(x))
  errs = {"encoder": rel_err(nhwc(out_z), ref_z), "decoder_x": rel_err(nhwc(out_x), ref_x),
          "decoder_y": rel_err(nhwc(out_y), ref_y), "normalize": rel_err(nhwc(out_n), ref_n)}
  print(f"DeepFN AE max rel err: {errs}")
  assert max(errs.values()) < 1e-5, errs
  # Not a weak check: the outputs vary over images and the two decoders differ.
  assert np.std(np.asarray(ref_x)) > 1e-2 and rel_err(ref_x, ref_y) > 1e-2
  assert_same_tree(keymap.deepfn_ae_from_torch(sd), params)


@pytest.mark.parametrize("num_aus", [12, 5])
def test_lenet_twin_matches_flax(num_aus):
  model = lenet_lib.LeNet5(num_aus)
  x = np.asarray(jax.random.uniform(jax.random.key(1), (4, 64, 64, 1)))
  params = perturb(model.init(jax.random.key(0), x)["params"], scale=0.2)
  sd = keymap.lenet_to_torch(params)
  twin = load_twin("LeNet5", dict(num_aus=num_aus, image_size=64), sd)
  ref = model.apply({"params": params}, x)
  with torch.no_grad():
    out = twin(nchw(x)).numpy()
  err = rel_err(out, ref)
  print(f"LeNet-5 ({num_aus} AUs) max rel err {err:.2e}")
  assert err < 1e-5
  assert np.std(np.asarray(ref)) > 1e-2
  assert_same_tree(keymap.lenet_from_torch(sd), params)


def test_export_from_saved_params(ae_setup, tmp_path):
  import safetensors.torch
  _, params, x, _ = ae_setup
  path = saved.save(str(tmp_path / "params" / "ae_bp4d_3"), "deepfn_ae", params, AE_KW,
                    person="bp4d:3")
  arch = export.export_deepfn(path, str(tmp_path / "out"))
  assert arch["parity"]["max_rel_err"] < 1e-5, arch["parity"]
  on_disk = json.loads((tmp_path / "out" / "architecture.json").read_text())
  assert on_disk["class"] == "DeepFNAutoEncoder" and on_disk["record"]["person"] == "bp4d:3"
  twin = torch_twins.from_architecture(on_disk).eval()
  twin.load_state_dict(safetensors.torch.load_file(str(tmp_path / "out" / "model.safetensors")),
                       strict=True)
  with torch.no_grad():
    out = twin.normalize(nchw(x))
  ref = ae_lib.AutoEncoder(widths=tuple(AE_KW["widths"]), latent=AE_KW["latent"]).apply(
      {"params": params}, x, method=ae_lib.AutoEncoder.normalize)
  assert rel_err(nhwc(out), ref) < 1e-5
  lenet = perturb(lenet_lib.LeNet5(3).init(jax.random.key(0), x)["params"], scale=0.2)
  path = saved.save(str(tmp_path / "params" / "lenet"), "deepfn_lenet", lenet,
                    dict(num_aus=3, image_size=64))
  loaded, record = saved.load(path)
  assert_same_tree(loaded, lenet)
  arch = export.export_params("deepfn_lenet", loaded, record["kwargs"],
                              str(tmp_path / "lenet_out"))
  assert arch["class"] == "LeNet5" and arch["parity"]["max_rel_err"] < 1e-5
  assert os.path.getsize(tmp_path / "lenet_out" / "model.pt") > 0


def test_protocol_saves_exportable_params(tmp_path):
  from norface_jax.configlib import load_config
  from norface_jax.deepfn import protocol
  c = load_config("configs/deepfn_bp4d.py:synthetic,tiny,save=all")
  # As tests/test_deepfn_train.py's tiny run, gender splits only (one pool, 8 AEs).
  c.data.frames_per_subject = 8
  c.data.max_subjects = {"bp4d": 9, "disfa": 3}
  c.preprocess.ae_size = c.preprocess.lenet_size = 32
  c.ae.update(widths=(4, 4, 8, 8), latent=8, batch_size=4)
  c.protocol.update(n_train=1, n_val=1, groups=("gender",))
  out = protocol.run(c, str(tmp_path))
  names = sorted(os.listdir(tmp_path / "params"))
  aes = [n for n in names if n.startswith("ae_") and n.endswith(".msgpack")]
  lenets = [n for n in names if n.startswith("lenet_") and n.endswith(".msgpack")]
  assert len(aes) == out["info"]["ae"]["persons"] == 8
  assert len(lenets) == 2 * 2 * 2  # within + cross, 2 directions each, 2 input kinds.
  for name in (aes[0], lenets[0]):
    arch = export.export_deepfn(str(tmp_path / "params" / name), str(tmp_path / name[:-8]))
    assert arch["parity"]["max_rel_err"] < 1e-5, (name, arch["parity"])
    assert arch["preprocess"]["histeq"] is True


def test_deepfn_twins_import_no_jax():
  import subprocess
  import sys
  code = ("import sys, norface_jax.torch_twins.deepfn, norface_jax.torch_twins; "
          "bad = [m for m in sys.modules if m.split('.')[0] in ('jax', 'flax', 'optax')]; "
          "assert not bad, bad")
  subprocess.run([sys.executable, "-c", code], check=True)
