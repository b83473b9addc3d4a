"""`launch/benchmark.py` for every model at a tiny size, the table's ratios, and the
stage-1 PyTorch twin computing the JAX step's losses (the benchmark itself checks the
twin's step-0 losses against the JAX step's on the same weights and pairs)."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is the optional interop extra")

from norface_jax.benchmark import common, nor  # noqa: E402
from norface_jax.losses import adversarial  # noqa: E402
from norface_jax.losses import normalization as nor_losses  # noqa: E402
from tests.conftest import FAST_COMPILE  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def test_accelerator_check_tiny_runs_every_part():
  """`launch/accelerator_check.sh --tiny` as a user runs it: every model's JAX and
  PyTorch rows in the summary table, each model's own table with FLOPs, MFU and the time
  to the first step, the Grain workers and the largest-batch line; the stage-1 twin's
  step-0 losses equal the JAX step's on the same weights and pairs."""
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count=1 {FAST_COMPILE}",
             JAX_PLATFORMS="cpu", OMP_NUM_THREADS="1")
  out = subprocess.run(["bash", os.path.join(ROOT, "launch", "accelerator_check.sh"), "--tiny",
                        f"--out={os.path.join(ROOT, '.pytest_accelerator_check.md')}"],
                       env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  with open(os.path.join(ROOT, ".pytest_accelerator_check.md")) as f:
    text = f.read()
  os.remove(os.path.join(ROOT, ".pytest_accelerator_check.md"))
  assert text.startswith("\n# Accelerator check (--tiny)") and text.strip() in out.stdout
  print(text)
  lines = text.splitlines()
  for part, step in (("stage 2 (F_cla)", "train"), ("stage 1 (F_nor)", "train"),
                     ("MAE", "train"), ("DeepFN", "AE train"), ("DeepFN", "LeNet train")):
    row = next(l for l in lines if l.startswith(f"| {part} | {step} |"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert float(cells[3]) > 0 and cells[4].endswith("x"), row  # images/s, vs torch eager
    assert cells[7].endswith("%") and float(cells[8]) > 0, row  # MFU, first step
  for model, step in (("cla", "train"), ("nor", "train"), ("mae", "train"), ("deepfn", "AE train")):
    section = text[text.index(f"model={model} "):]
    assert f"| torch eager {step} |" in section and f"- JAX {step} (" in section
    assert "model GFLOP/step" in section and "time to first step" in section
  assert "| Grain workers |" in text and "| 0 |" in text
  assert "stage 2, mu/8 32 px float32: this device reports no memory limit" in text
  # Same weights and pairs: the twin's losses are the JAX step's.
  note = next(l for l in text[text.index("model=nor "):].splitlines()
              if l.startswith("| torch eager train |"))
  assert float(note.split("JAX's to ")[1].split()[0].rstrip("|")) < 1e-4, note


def test_matmul_flops_by_hand():
  """2 x multiply-adds of every dot and convolution, backward passes and scan bodies
  included."""
  f = jax.jit(lambda a, b: jnp.tanh(a @ b).sum())
  a, b = jnp.ones((4, 8)), jnp.ones((8, 3))
  assert common.compile_traced(f, a, b)[1] == 2 * 4 * 8 * 3
  g = jax.jit(jax.grad(lambda a, b: jnp.tanh(a @ b).sum(), argnums=(0, 1)))
  assert common.compile_traced(g, a, b)[1] == 3 * 2 * 4 * 8 * 3  # forward, d/da, d/db
  h = jax.jit(lambda c, xs: jax.lax.scan(lambda c, x: (c @ x, None), c, xs)[0])
  assert common.compile_traced(h, jnp.ones((2, 5)), jnp.ones((7, 5, 5)))[1] == 7 * 2 * 2 * 5 * 5
  conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(
      x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")))
  # 4x4 outputs x 4 channels, each 3x3x3 multiply-adds.
  assert common.compile_traced(conv, jnp.ones((1, 6, 6, 3)), jnp.ones((3, 3, 3, 4)))[1] == (
      2 * 4 * 4 * 4 * 27)
  assert common.mfu(100.0, 10.0, 2, 1000.0) == 0.5  # 100 FLOPs x 5 steps/s / 1000


def test_table_ratios_are_per_step():
  rows = [common.Row("jax train", 30.0), common.Row("jax inference", 100.0),
          common.Row("torch eager train", 20.0), common.Row("torch eager inference", 50.0),
          common.Row("torch.compile train", float("nan"), "failed: X")]
  assert (rows[0].impl, rows[0].step) == ("jax", "train")
  assert (rows[4].impl, rows[4].step) == ("torch.compile", "train")
  table = common.format_table(rows)
  assert "| jax train | 30.0 | 1.50x |" in table
  assert "| jax inference | 100.0 | 2.00x |" in table
  assert "| torch.compile train | n/a | n/a | failed: X |" in table
  # Without a PyTorch row the ratio is to the JAX row of the same step.
  assert "| jax train | 30.0 | 1.00x (vs jax) |" in common.format_table(rows[:1])


def test_stage1_torch_losses_match_jax():
  """The twin step's loss functions against `losses.normalization` / `adversarial`."""
  rng = np.random.default_rng(0)
  r = lambda *shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731
  nchw = lambda x: torch.from_numpy(x.transpose(0, 3, 1, 2).copy())  # noqa: E731
  t = torch.from_numpy
  x_n, x_t = rng.uniform(size=(2, 4, 8, 8, 3)).astype(np.float32)
  same = np.array([True, False, True, False])
  maps_t, maps_n = [r(4, 8, 8, 5), r(4, 4, 4, 6)], [r(4, 8, 8, 5), r(4, 4, 4, 6)]
  e1, e2, lm1, lm2, b1, b2 = r(4, 16), r(4, 16), r(4, 68, 2), r(4, 68, 2), r(4, 4), r(4, 4)
  real, fake = [r(4, 3, 3, 1), r(4, 2, 2, 1)], [r(4, 3, 3, 1), r(4, 2, 2, 1)]
  pairs = [
      (nor_losses.reconstruction_loss(x_n, x_t, same),
       nor.reconstruction_loss(nchw(x_n), nchw(x_t), t(same))),
      (nor_losses.perceptual_loss(maps_t, maps_n, False),
       nor.perceptual_loss([nchw(m) for m in maps_t], [nchw(m) for m in maps_n], False)),
      (nor_losses.perceptual_loss(maps_t, maps_n, True),
       nor.perceptual_loss([nchw(m) for m in maps_t], [nchw(m) for m in maps_n], True)),
      (nor_losses.identity_loss(e1, e2), nor.identity_loss(t(e1), t(e2))),
      (nor_losses.landmark_loss(lm1, lm2), nor.landmark_loss(t(lm1), t(lm2))),
      (nor_losses.expression_loss(e1, e2), nor.expression_loss(t(e1), t(e2))),
      (nor_losses.eyebrow_loss(b1, b2), nor.eyebrow_loss(t(b1), t(b2))),
      (adversarial.hinge_g_loss(fake), nor.hinge_g_loss([nchw(f) for f in fake])),
      (adversarial.hinge_d_loss(real, fake),
       nor.hinge_d_loss([nchw(f) for f in real], [nchw(f) for f in fake])),
  ]
  for i, (want, got) in enumerate(pairs):
    np.testing.assert_allclose(float(got), float(want), rtol=1e-5, err_msg=str(i))


def test_stage1_twin_ramps_adv_like_jax():
  """With adv_warmup_steps (the SynthFACS calibration) and adv_weight the twin's total
  carries adv_weight * min(step / warmup, 1) * L_adv, as `stage1.make_train_step` does."""
  opts = common.Options(variant="mu/8", batch=2, image_size=32, perception="tiny")
  config = nor.make_config(opts)
  config.adv_warmup_steps = 4
  config.adv_weight = 0.5
  twin = nor.TorchStage1(config, opts)
  x_o = torch.rand(2, 3, 32, 32)
  same = torch.tensor([False, False])
  x_t = torch.roll(x_o, 1, 0)
  with torch.no_grad():
    for step, ramp in ((0, 0.0), (2, 0.25), (9, 0.5)):  # adv_weight * min(step / 4, 1)
      twin.step = step
      total, comps, _ = twin.g_losses(x_o, x_t, same)
      rest = sum(float(twin.weights[f"lambda_{k}"]) * float(v) for k, v in comps.items() if k != "adv")
      np.testing.assert_allclose(float(total), rest + ramp * float(comps["adv"]), rtol=1e-5)
  twin.step = 0
  twin.train_step((x_o * 255).to(torch.uint8))
  assert twin.step == 1


def test_every_benchmark_module_imports():
  """The scripts under norface_jax/benchmark/ run from the command line only, so an
  import that a refactor broke shows here first."""
  import importlib
  import pkgutil

  from norface_jax import benchmark
  for mod in pkgutil.iter_modules(benchmark.__path__):
    importlib.import_module(f"norface_jax.benchmark.{mod.name}")
