"""normalize_source writes the paired layout that stage 2's `precomputed` mode reads."""

import csv
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from norface_jax import configlib
from norface_jax.data import images as images_lib
from norface_jax.data import registry
from norface_jax.data.images import load_image
from norface_jax.data.synthfacs import source as synth_source
from norface_jax.models import normalizer
from norface_jax.inference import normalize, predict
from norface_jax.training import sharding, stage2
from tests.conftest import assert_params_close

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 64


def tiny_generator():
  gen = normalizer.Normalizer("mu/8", (8, 8, 8))
  x = jnp.zeros((1, SIZE, SIZE, 3))
  params = jax.jit(lambda r: gen.init(r, x, x, train=False)["params"])(jax.random.key(0))
  return gen, params


def test_normalize_fn_is_pure_uint8():
  gen, params = tiny_generator()
  target = np.full((SIZE, SIZE, 3), 128, np.uint8)
  fn = jax.jit(normalize.make_normalize_fn(gen, params, target))
  x = np.random.default_rng(0).integers(0, 255, (4, SIZE, SIZE, 3), dtype=np.uint8)
  y = fn(x)
  assert y.dtype == jnp.uint8 and y.shape == x.shape
  np.testing.assert_array_equal(y, fn(x))


def test_normalized_folder_trains_stage2_precomputed(tmp_path):
  gen, params = tiny_generator()
  target, subject = images_lib.load_target(
      "synthfacs:F003", configlib.load_config(os.path.join(ROOT, "configs", "stage1_synthfacs.py")).data)
  assert target.shape == (SIZE, SIZE, 3) and subject == 2  # F003
  fn = normalize.make_normalize_fn(gen, params, target)
  out = str(tmp_path / "norm")
  mesh = sharding.make_mesh([("data", -1)])
  sources = {}
  for split in ("train", "test"):
    sources[split] = synth_source.SynthFACSSource("bp4d", split, size=SIZE, frames_per_subject=2)
    stats = normalize.normalize_source(sources[split], fn, out, split=split, batch_size=16, mesh=mesh)
    assert stats["written"] == len(sources[split])
  # The layout: OUT/synthfacs/<split>/<index>.png, one file per item, what fn returns.
  assert len(os.listdir(os.path.join(out, "synthfacs", "test"))) == len(sources["test"])
  first = load_image(os.path.join(out, "synthfacs", "train", "000003.png"))
  np.testing.assert_array_equal(first, np.asarray(fn(sources["train"][3]["image"][None]))[0])
  paired = registry.PairedFolderSource(sources["train"], out, SIZE, "train")
  np.testing.assert_array_equal(paired[3]["image_norm"], first)

  # Stage 2 reads the folder with normalization='precomputed'.
  c = configlib.load_config(os.path.join(ROOT, "configs", "bp4d_au.py")
                            + ":synthetic,runlocal,norm=precomputed,normalized_dir=" + out)
  c.data.frames_per_subject = 2
  c.input.batch_size = 8
  c.input.eval_batch_size = 16
  c.total_steps = 2
  c.log_every = c.eval_every = c.checkpoint_every = 2
  c.eval.max_examples = 16
  result = stage2.train_and_evaluate(c, str(tmp_path / "stage2"))
  assert np.isfinite(result["report"]["f1/mean"])


def test_online_normalization_equals_precomputed(tmp_path):
  """Stage 2 with I_n made in the step by a frozen stage-1 checkpoint trains as with the
  same faces written to a folder first. Not bit-exact: inside the step the generator is
  fused with other work and sharded differently, so a few pixels round to the
  neighbouring uint8 level (measured: parameters agree to 3e-5 relative)."""
  from norface_jax.training import stage1
  # The commands: configs/normalizer.py:synthetic,runlocal, then launch/normalize.py.
  s1 = configlib.load_config(os.path.join(ROOT, "configs", "normalizer.py")
                             + ":synthetic,runlocal,perception_dir=random,steps=1")
  assert s1.target == "synthfacs:F003" and s1.loss.lambda_rec == 100.0  # SynthFACS calibration
  s1.data.frames_per_subject = 2
  s1.input.batch_size = 8
  s1.input.eval_batch_size = 8
  s1.log_every = s1.eval_every = s1.checkpoint_every = 1
  s1.eval.max_examples = 8
  s1_dir = str(tmp_path / "stage1")
  stage1.train_and_evaluate(s1, s1_dir)

  def stage2_config(extra):
    c = configlib.load_config(os.path.join(ROOT, "configs", "bp4d_au.py")
                              + ":synthetic,runlocal" + extra)
    c.data.frames_per_subject = 2
    c.input.batch_size = 8
    c.input.eval_batch_size = 16
    c.total_steps = 2
    c.log_every = c.eval_every = c.checkpoint_every = 2
    c.eval.max_examples = 16
    return c

  online = stage2_config(f",norm=online,stage1={s1_dir}")
  out = str(tmp_path / "norm")
  cmd = [sys.executable, os.path.join(ROOT, "launch", "normalize.py"), f"--checkpoint={s1_dir}",
         f"--out={out}", "--config=" + os.path.join(ROOT, "configs", "bp4d_au.py") + ":synthetic,runlocal",
         "--config.data.frames_per_subject=2", "--batch_size=16"]
  subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True)  # target: the config's F003
  np.testing.assert_array_equal(  # The default target is the stage-1 config's.
      load_image(os.path.join(out, "_target.png")), images_lib.load_target(s1.target, s1.data)[0])
  pre = stage2_config(f",norm=precomputed,normalized_dir={out}")
  a = stage2.train_and_evaluate(online, str(tmp_path / "online"))
  b = stage2.train_and_evaluate(pre, str(tmp_path / "pre"))
  assert_params_close(jax.device_get(a["state"].params), jax.device_get(b["state"].params),
                      rtol=1e-3, atol=1e-6, key_bias_atol=1e-3)

  # A whole photo through launch/predict.py's code: the precomputed-trained model gets
  # I_n from --stage1_workdir (made in the step), and predicts as the online-trained one.
  skimage_data = pytest.importorskip("skimage.data")
  photos = tmp_path / "photos"
  os.makedirs(photos)
  Image.fromarray(skimage_data.astronaut()).save(photos / "astronaut.png")
  rows = {}
  for name, s1_flag in (("pre", s1_dir), ("online", "")):
    out = predict.predict_media(str(tmp_path / name), str(tmp_path / f"{name}.csv"),
                                images=str(photos), stage1_workdir=s1_flag, canvas=256)
    assert out["faces"] == 1
    (rows[name],) = list(csv.DictReader(open(tmp_path / f"{name}.csv")))
  probs = {k: np.array([float(v) for c, v in r.items() if c.endswith("_prob")]) for k, r in rows.items()}
  assert len(probs["pre"]) == 12 and rows["pre"]["success"] == "1"  # BP4D's 12 AUs.
  np.testing.assert_allclose(probs["pre"], probs["online"], atol=2e-3)


def test_emm_attention_statistics_at_the_extremes():
  """Zeroed Q/K kernels and biases: uniform attention (entropy 1, self mass 1/N).
  Q = K = 100 x identity and I_o = I_t: nearly every target patch attends to its own
  patch (the final LayerNorm gives every token the same norm, though not every head's
  slice of it, so a few rows may pick another patch)."""
  from norface_jax.inference import stage1_report
  x = np.random.default_rng(0).integers(0, 255, (2, SIZE, SIZE, 3), dtype=np.uint8)
  gen, params = tiny_generator()
  params = jax.device_get(params)
  flat = lambda a: np.asarray(a.unbox() if hasattr(a, "unbox") else a)  # noqa: E731

  def with_qk(kernel_qk):
    kernel = flat(params["emm"]["qkv"]["kernel"]).copy()  # (D, 3, H, K): Q, K, V.
    bias = flat(params["emm"]["qkv"]["bias"]).copy()
    kernel[:, :2], bias[:2] = kernel_qk, 0.0
    return {**params, "emm": {**params["emm"], "qkv": {"kernel": kernel, "bias": bias}}}

  d = flat(params["emm"]["qkv"]["kernel"]).shape
  u = stage1_report.emm_attention(gen, with_qk(0.0), x, x[0])
  n = (SIZE // 8) ** 2
  np.testing.assert_allclose([u["entropy"], u["self_mass"], u["uniform_mass"]], [1.0, 1 / n, 1 / n],
                             rtol=1e-5)
  eye = 100.0 * np.eye(d[0], dtype=np.float32).reshape(d[0], 1, d[2], d[3])
  same = stage1_report.emm_attention(gen, with_qk(eye), x[:1], x[0])
  assert same["argmax_self"] > 0.9 and same["self_mass"] > 0.9 and same["entropy"] < 0.1, same
