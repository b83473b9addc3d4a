"""Tests for the MAE/timm-layout ViT encoder."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from norface_jax.models import vit as vit_lib

KEY = jax.random.key(0)


def _init(model, x):
  return nn.unbox(model.init(KEY, x, train=False))


def _count(tree):
  return sum(a.size for a in jax.tree.leaves(tree))


def test_decode_variant():
  assert vit_lib.decode_variant("Ti/16") == dict(
      width=192, depth=12, num_heads=3, mlp_dim=768, patch_size=16)
  assert vit_lib.decode_variant("S/16")["num_heads"] == 6
  assert vit_lib.decode_variant("B/16")["width"] == 768
  assert vit_lib.decode_variant("L/16")["depth"] == 24
  assert vit_lib.decode_variant("mu/8") == dict(
      width=32, depth=2, num_heads=2, mlp_dim=128, patch_size=8)
  with pytest.raises(ValueError):
    vit_lib.decode_variant("XL/16")


@pytest.mark.parametrize("hw", [(32, 32), (32, 48), (64, 64)])
def test_shapes(hw):
  model = vit_lib.ViT("mu/8")
  x = jnp.ones((2, *hw, 3))
  y = model.apply(_init(model, x), x, train=False)
  assert y.shape == (2, 1 + (hw[0] // 8) * (hw[1] // 8), 32)


def test_not_divisible_raises():
  with pytest.raises(ValueError):
    vit_lib.ViT("mu/8").init(KEY, jnp.ones((1, 30, 32, 3)), train=False)


def test_sincos_2x2_by_hand():
  # dim 8: channels 0..3 encode the column c, 4..7 the row r, each as
  # [sin(pos*w0), sin(pos*w1), cos(pos*w0), cos(pos*w1)], w_i = 1e4^(-i/2):
  # w0 = 1, w1 = 1/100. Patch order (r, c): (0,0), (0,1), (1,0), (1,1).
  def one(pos):
    return [math.sin(pos), math.sin(pos / 100), math.cos(pos), math.cos(pos / 100)]
  expected = [[0.0] * 8]  # cls row
  for r in range(2):
    for c in range(2):
      expected.append(one(c) + one(r))
  got = vit_lib.get_2d_sincos_pos_embed(8, (2, 2), cls_token=True)
  np.testing.assert_allclose(got, np.array(expected), atol=1e-7)
  # e.g. patch (0, 1): [sin 1, sin .01, cos 1, cos .01, 0, 0, 1, 1]
  np.testing.assert_allclose(
      got[2], [0.841471, 0.0099998, 0.540302, 0.99995, 0, 0, 1, 1], atol=1e-5)


def test_scan_matches_loop():
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  loop, scan = vit_lib.ViT("mu/8"), vit_lib.ViT("mu/8", scan=True)
  p_loop = _init(loop, x)["params"]
  p_scan = _init(scan, x)["params"]
  assert _count(p_loop) == _count(p_scan)
  assert p_scan["blocks"]["attn"]["qkv"]["kernel"].shape == (2, 32, 3, 2, 16)
  stacked = vit_lib.stack_block_params(p_loop, depth=2)
  y_loop = loop.apply({"params": p_loop}, x, train=False)
  y_scan = scan.apply({"params": stacked}, x, train=False)
  np.testing.assert_allclose(y_loop, y_scan, atol=1e-5)
  back = vit_lib.unstack_block_params(stacked)
  jax.tree.map(np.testing.assert_array_equal, back, p_loop)


@pytest.mark.parametrize("scan", [False, True])
def test_remat_same_output(scan):
  x = jax.random.normal(jax.random.key(2), (2, 32, 32, 3))
  base = vit_lib.ViT("mu/8", scan=scan)
  params = _init(base, x)
  g = lambda m: jax.jit(jax.grad(lambda p: m.apply(p, x, train=True).sum()))(params)
  for policy in ("", "dots_with_no_batch_dims_saveable"):
    rem = vit_lib.ViT("mu/8", scan=scan, remat=True, remat_policy=policy)
    np.testing.assert_allclose(base.apply(params, x, train=False),
                               rem.apply(params, x, train=False), atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5),
                 g(base), g(rem))
  # The policy reaches the program: a saveable-dots policy recomputes fewer matmuls.
  n_dots = lambda m: str(jax.make_jaxpr(jax.grad(  # noqa: E731
      lambda p: m.apply(p, x, train=True).sum()))(params)).count("dot_general")
  assert (n_dots(vit_lib.ViT("mu/8", scan=scan, remat=True,
                             remat_policy="dots_with_no_batch_dims_saveable"))
          < n_dots(vit_lib.ViT("mu/8", scan=scan, remat=True)))
  with pytest.raises(ValueError, match="no_such_policy"):
    vit_lib.ViT("mu/8", remat=True, remat_policy="no_such_policy").init(
        jax.random.key(0), x, train=False)


def test_attention_implementation_by_config():
  assert vit_lib.attention_implementation("auto", jnp.bfloat16) == (
      "cudnn" if jax.default_backend() == "gpu" else "xla")
  assert vit_lib.attention_implementation("auto", jnp.float32) == "xla"
  assert vit_lib.attention_implementation("cudnn", jnp.float32) == "cudnn"
  with pytest.raises(ValueError, match="flash"):
    vit_lib.attention_implementation("flash", jnp.float32)
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  params = _init(vit_lib.ViT("mu/8"), x)
  np.testing.assert_array_equal(vit_lib.ViT("mu/8", attention="xla").apply(params, x, train=False),
                                vit_lib.ViT("mu/8").apply(params, x, train=False))


def test_bf16_compute_f32_params():
  x = jnp.ones((2, 32, 32, 3))
  model = vit_lib.ViT("mu/8", dtype=jnp.bfloat16)
  params = _init(model, x)
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(params))
  y = model.apply(params, x, train=False)
  assert y.dtype == jnp.bfloat16
  assert bool(jnp.all(jnp.isfinite(y.astype(jnp.float32))))


def test_dropout_and_drop_path_only_in_train():
  x = jax.random.normal(jax.random.key(3), (2, 32, 32, 3))
  model = vit_lib.ViT("mu/8", dropout_rate=0.1, drop_path_rate=0.5)
  params = _init(model, x)
  ev = model.apply(params, x, train=False)
  tr = lambda k: model.apply(params, x, train=True,
                             rngs={"dropout": jax.random.key(k)})
  assert not np.allclose(tr(0), ev)
  assert not np.allclose(tr(0), tr(1))
  np.testing.assert_array_equal(ev, model.apply(params, x, train=False))


def test_logical_axes():
  x = jnp.ones((1, 16, 16, 3))
  specs = nn.get_partition_spec(
      jax.eval_shape(lambda: vit_lib.ViT("mu/8", scan=True).init(
          KEY, x, train=False)))["params"]
  assert tuple(specs["blocks"]["mlp"]["fc1"]["kernel"]) == ("layers", "embed", "mlp")
  assert tuple(specs["blocks"]["attn"]["proj"]["kernel"]) == (
      "layers", "heads", "kv", "embed")
  assert tuple(specs["patch_embed"]["kernel"]) == (None, None, None, "embed")


def test_matches_timm_layout_forward_in_torch():
  """The documented timm key mapping reproduces a timm-style torch forward."""
  torch = pytest.importorskip("torch")
  F = torch.nn.functional
  x = jax.random.normal(jax.random.key(4), (2, 16, 24, 3))
  model = vit_lib.ViT("mu/8")
  p = _init(model, x)["params"]
  want = np.asarray(model.apply({"params": p}, x, train=False))
  t = lambda a: torch.from_numpy(np.array(a, np.float32))
  d, h = 32, 2
  sd = {"cls_token": t(p["cls"]),
        "patch_embed.proj.weight": t(p["patch_embed"]["kernel"]).permute(3, 2, 0, 1),
        "patch_embed.proj.bias": t(p["patch_embed"]["bias"]),
        "norm.weight": t(p["norm"]["scale"]), "norm.bias": t(p["norm"]["bias"])}
  for i in range(2):
    b, k = p[f"block_{i}"], f"blocks.{i}."
    for n in ("norm1", "norm2"):
      sd[k + n + ".weight"], sd[k + n + ".bias"] = t(b[n]["scale"]), t(b[n]["bias"])
    sd[k + "attn.qkv.weight"] = t(b["attn"]["qkv"]["kernel"]).reshape(d, 3 * d).T
    sd[k + "attn.qkv.bias"] = t(b["attn"]["qkv"]["bias"]).reshape(3 * d)
    sd[k + "attn.proj.weight"] = t(b["attn"]["proj"]["kernel"]).reshape(d, d).T
    sd[k + "attn.proj.bias"] = t(b["attn"]["proj"]["bias"])
    for n in ("fc1", "fc2"):
      sd[k + f"mlp.{n}.weight"] = t(b["mlp"][n]["kernel"]).T
      sd[k + f"mlp.{n}.bias"] = t(b["mlp"][n]["bias"])
  # timm VisionTransformer forward_features, written out.
  z = F.conv2d(t(x).permute(0, 3, 1, 2), sd["patch_embed.proj.weight"],
               sd["patch_embed.proj.bias"], stride=8).flatten(2).transpose(1, 2)
  z = torch.cat([sd["cls_token"].expand(2, -1, -1), z], dim=1)
  z = z + t(vit_lib.get_2d_sincos_pos_embed(d, (2, 3)))[None]
  ln = lambda v, n: F.layer_norm(v, (d,), sd[n + ".weight"], sd[n + ".bias"], 1e-6)
  for i in range(2):
    k = f"blocks.{i}."
    y = ln(z, k + "norm1")
    qkv = F.linear(y, sd[k + "attn.qkv.weight"], sd[k + "attn.qkv.bias"])
    q, kk, v = qkv.reshape(2, -1, 3, h, d // h).permute(2, 0, 3, 1, 4)
    a = torch.softmax(q @ kk.transpose(-2, -1) * (d // h) ** -0.5, dim=-1)
    y = (a @ v).transpose(1, 2).reshape(2, -1, d)
    z = z + F.linear(y, sd[k + "attn.proj.weight"], sd[k + "attn.proj.bias"])
    y = F.gelu(F.linear(ln(z, k + "norm2"), sd[k + "mlp.fc1.weight"],
                        sd[k + "mlp.fc1.bias"]))
    z = z + F.linear(y, sd[k + "mlp.fc2.weight"], sd[k + "mlp.fc2.bias"])
  np.testing.assert_allclose(ln(z, "norm").numpy(), want, atol=1e-4)
