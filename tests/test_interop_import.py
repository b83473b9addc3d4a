"""Import of timm/MAE-layout PyTorch ViT checkpoints into the Flax ViT.

The checkpoint is built in PyTorch with timm key names (the twin `VisionTransformer`,
random weights), wrapped as MAE wraps it (`{"model": ...}` plus decoder keys), saved,
imported, and the Flax features compared with PyTorch's.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from norface_jax import torch_twins  # pylint: disable=g-import-not-at-top
from norface_jax.interop import import_timm
from norface_jax.models import vit as vit_lib
from norface_jax.training import checkpointing, optim, stage2


def random_twin(variant="mu/8", size=32, seed=0, pos_embed="sincos"):
  torch.manual_seed(seed)
  twin = torch_twins.VisionTransformer(variant, img_size=size, pos_embed=pos_embed)
  with torch.no_grad():
    for name, p in twin.named_parameters():
      p.copy_(torch.randn_like(p) * (0.2 if p.ndim > 1 else 0.05) + (1.0 if "norm" in name and
                                                                       name.endswith("weight") else 0.0))
  return twin.eval()


def mae_checkpoint(twin, path):
  sd = dict(twin.state_dict())
  sd["mask_token"] = torch.zeros(1, 1, 16)
  sd["decoder_embed.weight"] = torch.zeros(16, 32)
  sd["decoder_blocks.0.norm1.weight"] = torch.ones(16)
  sd["decoder_pos_embed"] = torch.zeros(1, 17, 16)
  torch.save({"model": sd, "epoch": 3}, path)


def test_mae_checkpoint_imports_and_matches_torch(tmp_path):
  twin = random_twin()
  mae_checkpoint(twin, tmp_path / "mae.pth")
  sd = import_timm.load_state_dict(str(tmp_path / "mae.pth"))
  params, info = import_timm.convert(sd, image_size=48)
  assert info["variant"] == "mu/8" and info["pos_embed"]["sincos"]
  assert "mask_token" in info["dropped"] and "decoder_embed.weight" in info["dropped"]
  vit = vit_lib.ViT("mu/8")
  for size in (32, 48):  # The checkpoint's resolution and another one (sin-cos recomputed).
    x = np.random.default_rng(size).standard_normal((2, size, size, 3)).astype(np.float32)
    ref = twin(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).detach().numpy()
    out = np.asarray(vit.apply({"params": params}, jnp.asarray(x), train=False))
    err = np.max(np.abs(out - ref)) / np.max(np.abs(ref))
    print(f"import parity at {size}px: max rel err {err:.2e}")
    assert err < 1e-5


def test_learned_pos_embed_is_kept_and_fc_norm_is_used(tmp_path):
  sd = {k: v.numpy() for k, v in random_twin().state_dict().items()}
  sd["pos_embed"] = sd["pos_embed"] + 0.1
  sd["fc_norm.weight"], sd["fc_norm.bias"] = sd.pop("norm.weight"), sd.pop("norm.bias")
  sd["head.weight"], sd["head.bias"] = np.zeros((5, 32), np.float32), np.zeros(5, np.float32)
  params, info = import_timm.convert(sd)
  assert not info["pos_embed"]["sincos"] and info["pos_embed"]["kept"]
  assert info["pos_embed"]["max_abs_diff_to_sincos"] == pytest.approx(0.1, abs=1e-5)
  assert info["pos_embed_mode"] == "learned"
  np.testing.assert_array_equal(params["pos_embedding"], sd["pos_embed"])
  np.testing.assert_array_equal(params["norm"]["scale"], sd["fc_norm.weight"])
  # pos_embed="sincos": dropped as before; a sin-cos table is never kept by "auto".
  dropped, info = import_timm.convert(sd, pos_embed="sincos")
  assert "pos_embedding" not in dropped and info["pos_embed_mode"] == "sincos"
  sincos = {k: v.numpy() for k, v in random_twin().state_dict().items()}
  assert "pos_embedding" not in import_timm.convert(sincos)[0]
  # A table without the cls row (timm no_embed_class) gets a zero one.
  no_cls = dict(sd, pos_embed=sd["pos_embed"][:, 1:])
  np.testing.assert_array_equal(import_timm.convert(no_cls)[0]["pos_embedding"][0, 0], 0.0)
  sd["blocks.0.attn.extra"] = np.zeros(3, np.float32)
  with pytest.raises(KeyError, match="no place"):
    import_timm.convert(sd)


def timm_resample(pos_embed, grid):
  """timm's `resample_abs_pos_embed` (cls row kept, one prefix token), written out."""
  d = pos_embed.shape[-1]
  g = int(round((pos_embed.shape[1] - 1) ** 0.5))
  patches = pos_embed[:, 1:].reshape(1, g, g, d).permute(0, 3, 1, 2)
  patches = torch.nn.functional.interpolate(patches, size=grid, mode="bicubic", antialias=True)
  return torch.cat([pos_embed[:, :1], patches.permute(0, 2, 3, 1).reshape(1, -1, d)], dim=1)


def test_learned_pos_embed_imports_and_matches_torch(tmp_path):
  """A timm-named ViT with a random learned pos_embed: the same features at its own
  resolution, and at another one against the table resampled torch-side (timm's formula),
  whether the importer resamples (image_size=) or the Flax ViT does at run time."""
  twin = random_twin(pos_embed="learned")
  sd = {k: v.detach().numpy() for k, v in twin.state_dict().items()}
  assert float(np.abs(sd["pos_embed"]).max()) > 0.3  # Random, far from sin-cos.
  import safetensors.numpy
  safetensors.numpy.save_file(sd, str(tmp_path / "vit.safetensors"))
  loaded = import_timm.load_state_dict(str(tmp_path / "vit.safetensors"))
  params, info = import_timm.convert(loaded)
  assert info["pos_embed_mode"] == "learned" and params["pos_embedding"].shape == (1, 17, 32)
  resampled, info48 = import_timm.convert(loaded, image_size=48)
  assert resampled["pos_embedding"].shape == (1, 37, 32)
  assert info48["pos_embed"]["pos_embedding_grid"] == 6
  ref_table = timm_resample(torch.from_numpy(sd["pos_embed"]), (6, 6)).numpy()
  np.testing.assert_allclose(resampled["pos_embedding"], ref_table, rtol=0, atol=1e-5)

  vit = vit_lib.ViT("mu/8", pos_embed="learned")
  twin48 = torch_twins.VisionTransformer("mu/8", img_size=48, pos_embed="learned").eval()
  twin48.load_state_dict(dict(twin.state_dict(), pos_embed=torch.from_numpy(ref_table)))
  for size, ref_twin, cases in ((32, twin, {"import at 32": params}),
                                (48, twin48, {"import at 32, run at 48": params,
                                              "import at 48": resampled})):
    x = np.random.default_rng(size).standard_normal((2, size, size, 3)).astype(np.float32)
    with torch.no_grad():
      ref = ref_twin(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    for name, p in cases.items():
      out = np.asarray(vit.apply({"params": p}, jnp.asarray(x), train=False))
      err = np.max(np.abs(out - ref)) / np.max(np.abs(ref))
      print(f"learned pos_embed, {name}: max rel err {err:.2e}")
      assert err < 1e-5


def test_learned_pos_checkpoint_inits_stage2_classifier(tmp_path):
  """config.model.pos_embed='learned' reaches the ViT, and init_from grafts the table."""
  import os
  from norface_jax import configlib
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  c = configlib.load_config(os.path.join(root, "configs", "rafdb_fer.py") + ":synthetic,runlocal")
  assert c.model.pos_embed == "sincos"
  c.model.pos_embed = "learned"
  size = c.data.image_size
  sd = {k: v.detach().numpy() for k, v in random_twin(pos_embed="learned").state_dict().items()}
  params, info = import_timm.convert(sd, variant=c.model.encoder, image_size=size)
  directory = import_timm.write_init_checkpoint(params, str(tmp_path / "imported"), info)
  model = stage2.make_model(c, stage2.make_task(c))
  assert model.pos_embed == "learned"
  x = jnp.zeros((1, size, size, 3))
  fresh = nn.unbox(jax.jit(lambda r: model.init(r, x, x, train=False))(jax.random.key(0)))
  state = optim.TrainState(step=jnp.zeros((), jnp.int32), params=fresh["params"], opt_state=())
  loaded = checkpointing.graft_params(state.params, directory, "encoder")["encoder"]
  np.testing.assert_array_equal(loaded["pos_embedding"], params["pos_embedding"])
  np.testing.assert_array_equal(loaded["block_1"]["mlp"]["fc2"]["kernel"],
                                params["block_1"]["mlp"]["fc2"]["kernel"])


@pytest.mark.parametrize("scan", [False, True])
def test_written_checkpoint_is_accepted_by_graft_params(tmp_path, scan):
  sd = {k: v.numpy() for k, v in random_twin().state_dict().items()}
  params, info = import_timm.convert(sd, scan=scan)
  directory = import_timm.write_init_checkpoint(params, str(tmp_path / "imported"), info)
  vit = vit_lib.ViT("mu/8", scan=scan)
  fresh = nn.unbox(vit.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))["params"]
  state = optim.TrainState(step=jnp.zeros((), jnp.int32),
                           params={"encoder": fresh, "head": jnp.zeros(3)}, opt_state=())
  loaded = checkpointing.graft_params(state.params, directory, "encoder")["encoder"]
  for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)
