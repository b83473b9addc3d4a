"""The real stage-1 trainer, tiny, on 8 fake CPU devices (data x model mesh)."""

import os

import jax
import numpy as np

from norface_jax import configlib
from norface_jax.training import stage1, writers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config():
  c = configlib.load_config(os.path.join(ROOT, "configs", "stage1_synthfacs.py")
                            + ":perception_dir=random")
  c.data.image_size = 64
  c.data.frames_per_subject = 2
  c.input.batch_size = 16
  c.input.eval_batch_size = 16
  c.model.decoder_channels = (16, 8, 8)
  c.model.disc_channels = (8, 16)
  c.total_steps = 4
  c.log_every = 2
  c.eval_every = 4
  c.checkpoint_every = 4
  c.eval.max_examples = 16
  c.eval.grid_size = 4
  c.mesh = (("data", 4), ("model", 2))
  return c


def test_stage1_resume_is_exact_and_logs_every_loss(tmp_path):
  config = tiny_config()
  full = stage1.train_and_evaluate(config, str(tmp_path / "full"))
  stage1.train_and_evaluate(config, str(tmp_path / "split"), stop_at=2)
  resumed = stage1.train_and_evaluate(config, str(tmp_path / "split"))
  a = jax.device_get((full["state"].g_params, full["state"].d_params))
  b = jax.device_get((resumed["state"].g_params, resumed["state"].d_params))
  for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))
  logs = writers.read_jsonl(str(tmp_path / "full"))
  keys = set().union(*logs)
  for k in ("training_loss", "loss/adv", "loss/rec", "loss/perc", "loss/id", "loss/lm",
            "loss/exp", "loss/eye", "loss/d_hinge", "images_per_sec",
            "eval/expression/icc_In", "eval/identity/target_rate_In"):
    assert k in keys, k
  assert all(np.isfinite(v) for row in logs for v in row.values())
  assert os.path.exists(tmp_path / "full" / "stage1_grid.png")
  # The ViT encoder is sharded over the model axis like stage 2's.
  specs = [x.sharding.spec for x in jax.tree.leaves(full["state"].g_params)]
  assert any("model" in str(s) for s in specs)
  check_torch_export(config, str(tmp_path / "full"), full["state"].g_params,
                     str(tmp_path / "export"))


def check_torch_export(config, workdir, g_params, out):
  """The workdir's F_nor exports (`stage="nor"`) and its twin loads strictly and matches."""
  try:
    import torch
  except ImportError:
    return
  import safetensors.torch
  from norface_jax import torch_twins
  from norface_jax.interop import export

  arch = export.export_workdir(workdir, out)
  print("F_nor export parity:", arch["parity"])
  assert arch["network"] == "nor" and arch["class"] == "NorfaceNormalizer"
  assert arch["inputs"] == ["image_o", "image_t"] and arch["step"] == config.total_steps
  assert arch["parity"]["max_rel_err"] < 1e-5
  twin = torch_twins.from_architecture(arch).eval()
  twin.load_state_dict(safetensors.torch.load_file(os.path.join(out, "model.safetensors")),
                       strict=True)
  # The trained generator on [0, 1] faces, as the trainer runs it.
  size = config.data.image_size
  x_o, x_t = np.random.default_rng(0).uniform(size=(2, 2, size, size, 3)).astype(np.float32)
  gen, _ = stage1.make_models(config)
  ref = gen.apply({"params": jax.device_get(g_params)}, x_o, x_t, train=False)
  with torch.no_grad():
    out_t = twin(*[torch.from_numpy(x.transpose(0, 3, 1, 2).copy()) for x in (x_o, x_t)])
  ref = np.asarray(ref).transpose(0, 3, 1, 2)
  assert np.max(np.abs(out_t.numpy() - ref)) / np.max(np.abs(ref)) < 1e-5
