"""MAE model pieces, and the documented chain on tiny data: pretrain (4 steps; SIGTERM'd
at 2 and resumed bit-identically) -> stage 2 with init_from (2 steps) -> export ->
PyTorch logits."""

import json
import os
import signal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from norface_jax import configlib
from norface_jax.models import mae as mae_lib
from norface_jax.models import vit as vit_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_masked_vit_is_vit_without_mask_and_gathers_with_one():
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  vit = vit_lib.ViT("mu/8")
  params = nn.unbox(vit.init(jax.random.key(1), x, train=False))["params"]
  masked = mae_lib.MaskedViT("mu/8")
  full = masked.apply({"params": params}, x, train=False)
  np.testing.assert_array_equal(full, vit.apply({"params": params}, x, train=False))
  ids = jnp.array([[3, 0, 7], [15, 1, 2]])
  assert masked.apply({"params": params}, x, ids, train=False).shape == (2, 4, 32)


def test_masking_patchify_and_loss():
  m = mae_lib.random_masking(jax.random.key(0), 3, 16, 0.75)
  assert m["ids_keep"].shape == (3, 4)
  np.testing.assert_array_equal(m["mask"].sum(1), [12, 12, 12])
  # Kept patches are exactly the unmasked ones.
  for b in range(3):
    assert set(np.asarray(m["ids_keep"][b])) == set(np.flatnonzero(np.asarray(m["mask"][b]) == 0))
  x = jax.random.normal(jax.random.key(1), (2, 16, 24, 3))
  np.testing.assert_array_equal(mae_lib.unpatchify(mae_lib.patchify(x, 8), 8, (2, 3)), x)
  # Patch 1 of image 0 is rows 0..7, columns 8..15.
  np.testing.assert_array_equal(mae_lib.patchify(x, 8)[0, 1], x[0, :8, 8:16].reshape(-1))
  # Loss by hand: masked patch errors 1 and 3 (per-patch means), unmasked ignored -> 2.
  pred = jnp.array([[[1.0, 1.0], [3.0, 3.0], [9.0, 9.0]]])
  r3 = 3.0 - np.sqrt(3.0)  # Patch 1 is off by sqrt(3) in each pixel: MSE 3.
  target = jnp.array([[[0.0, 0.0], [r3, r3], [0.0, 0.0]]])
  loss = mae_lib.reconstruction_loss(pred, target, jnp.array([[1.0, 1.0, 0.0]]))
  np.testing.assert_allclose(loss, 2.0, rtol=1e-6)
  t = mae_lib.patch_targets(x, 8, True)
  np.testing.assert_allclose(t.mean(-1), 0.0, atol=1e-5)
  np.testing.assert_allclose(t.std(-1, ddof=1), 1.0, atol=1e-4)


def test_mae_forward_shapes():
  model = mae_lib.MAE("mu/8", decoder_width=16, decoder_depth=1, decoder_heads=2)
  x = jnp.zeros((2, 32, 32, 3))
  variables = model.init({"params": jax.random.key(0), "mask": jax.random.key(1)}, x, train=False)
  out = model.apply(variables, x, train=False, rngs={"mask": jax.random.key(2)})
  assert out["pred"].shape == (2, 16, 8 * 8 * 3) and out["mask"].shape == (2, 16)
  # The encoder subtree is exactly a ViT's params (what init_from_key='encoder' grafts).
  vit_params = vit_lib.ViT("mu/8").init(jax.random.key(0), x, train=False)["params"]
  assert (jax.tree.structure(nn.unbox(variables["params"]["encoder"]))
          == jax.tree.structure(nn.unbox(vit_params)))


def tiny_mae_config():
  c = configlib.load_config(os.path.join(ROOT, "configs", "mae_pretrain.py") + ":runlocal,steps=4")
  c.data.image_size = 64
  c.data.num_identities = 24
  c.model.encoder = "mu/16"
  c.input.batch_size = 16
  c.input.eval_batch_size = 16
  c.log_every = 1
  c.eval_every = 4
  c.eval.max_examples = 16
  c.eval.num_images = 4
  return c


def test_pretrain_then_stage2_then_export_matches_torch(tmp_path):
  torch = pytest.importorskip("torch")
  from norface_jax import torch_twins
  from norface_jax.interop import export
  from norface_jax.training import checkpointing, mae as mae_trainer
  from norface_jax.training import stage2, writers

  result = mae_trainer.train_and_evaluate(tiny_mae_config(), str(tmp_path / "mae"))
  assert np.isfinite(result["eval_loss"])
  # A real SIGTERM after step 2, then the same call: bit-identical to the straight run.
  kill = lambda s: os.kill(os.getpid(), signal.SIGTERM) if s == 2 else None  # noqa: E731
  cut = mae_trainer.train_and_evaluate(tiny_mae_config(), str(tmp_path / "cut"), on_step=kill)
  assert cut["stopped"] == "preempted" and int(cut["state"].step) == 2
  resumed = mae_trainer.train_and_evaluate(tiny_mae_config(), str(tmp_path / "cut"))
  assert resumed["start"] == 2
  for a, b in zip(jax.tree.leaves(jax.device_get(result["state"])),
                  jax.tree.leaves(jax.device_get(resumed["state"]))):
    np.testing.assert_array_equal(a, b)
  logs = writers.read_jsonl(str(tmp_path / "mae"))
  assert {"training_loss", "eval/loss", "l2_grads"} <= set().union(*logs)
  assert os.path.exists(tmp_path / "mae" / "mae_reconstruction.png")
  mae_encoder = jax.device_get(result["state"].params["encoder"])

  c = configlib.load_config(os.path.join(ROOT, "configs", "rafdb_fer.py") + ":synthetic,runlocal")
  c.data.image_size = 64
  c.data.num_identities = 24
  c.input.batch_size = 16
  c.input.eval_batch_size = 16
  c.eval.max_examples = 16
  c.log_every = 1
  c.mesh = (("data", 4), ("model", 2))
  c.total_steps = 2
  c.eval_every = 2
  c.checkpoint_every = 2
  c.model.encoder = "mu/16"
  c.init_from = str(tmp_path / "mae" / "checkpoints")
  # The graft itself: step-0 F_cla encoder == the pre-trained encoder.
  setup = stage2.build(c, 64)
  state = jax.jit(lambda r: nn.unbox(setup.init_fn(r)),
                  out_shardings=setup.state_shardings)(setup.init_rng)
  grafted = checkpointing.graft_params(state.params, c.init_from, "encoder")["encoder"]
  for a, b in zip(jax.tree.leaves(jax.device_get(grafted)), jax.tree.leaves(mae_encoder)):
    np.testing.assert_array_equal(a, b)
  stage2.train_and_evaluate(c, str(tmp_path / "cla"))

  arch = export.export_workdir(str(tmp_path / "cla"), str(tmp_path / "export"))
  print("export parity:", arch["parity"])
  assert arch["parity"]["max_rel_err"] < 1e-5
  # A PyTorch-only load of the files, as docs/interop.md shows.
  import safetensors.torch
  with open(tmp_path / "export" / "architecture.json") as f:
    arch = json.load(f)
  twin = torch_twins.from_architecture(arch).eval()
  twin.load_state_dict(safetensors.torch.load_file(str(tmp_path / "export" / "model.safetensors")),
                       strict=True)
  pt = torch.load(str(tmp_path / "export" / "model.pt"))
  twin.load_state_dict(pt, strict=True)
