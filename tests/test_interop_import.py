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
from norface_jax.training import optim, stage2


def random_twin(variant="mu/8", size=32, seed=0):
  torch.manual_seed(seed)
  twin = torch_twins.VisionTransformer(variant, img_size=size)
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


def test_learned_pos_embed_warns_and_fc_norm_is_used(tmp_path):
  sd = {k: v.numpy() for k, v in random_twin().state_dict().items()}
  sd["pos_embed"] = sd["pos_embed"] + 0.1
  sd["fc_norm.weight"], sd["fc_norm.bias"] = sd.pop("norm.weight"), sd.pop("norm.bias")
  sd["head.weight"], sd["head.bias"] = np.zeros((5, 32), np.float32), np.zeros(5, np.float32)
  params, info = import_timm.convert(sd)
  assert not info["pos_embed"]["sincos"]
  assert info["pos_embed"]["max_abs_diff_to_sincos"] == pytest.approx(0.1, abs=1e-5)
  np.testing.assert_array_equal(params["norm"]["scale"], sd["fc_norm.weight"])
  sd["blocks.0.attn.extra"] = np.zeros(3, np.float32)
  with pytest.raises(KeyError, match="no place"):
    import_timm.convert(sd)


@pytest.mark.parametrize("scan", [False, True])
def test_written_checkpoint_is_accepted_by_load_pretrained(tmp_path, scan):
  sd = {k: v.numpy() for k, v in random_twin().state_dict().items()}
  params, info = import_timm.convert(sd, scan=scan)
  directory = import_timm.write_init_checkpoint(params, str(tmp_path / "imported"), info)
  vit = vit_lib.ViT("mu/8", scan=scan)
  fresh = nn.unbox(vit.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))["params"]
  state = optim.TrainState(step=jnp.zeros((), jnp.int32),
                           params={"encoder": fresh, "head": jnp.zeros(3)}, opt_state=())
  loaded = stage2.load_pretrained(state, directory, "encoder").params["encoder"]
  for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)
