"""`launch/benchmark.py` for every model at a tiny size, the table's ratios, and the
stage-1 PyTorch twin computing the JAX step's losses (the benchmark itself checks the
twin's step-0 losses against the JAX step's on the same weights and pairs)."""

import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is the optional interop extra")

from norface_jax.benchmark import common, nor  # noqa: E402
from norface_jax.losses import adversarial  # noqa: E402
from norface_jax.losses import normalization as nor_losses  # noqa: E402
from tests.conftest import FAST_COMPILE  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One timed step per row, no torch.compile (minutes of Inductor builds on a CPU).
TINY = {"cla": ["--variant=mu/8", "--image_size=32", "--batch=2"],
        "nor": ["--variant=mu/8", "--image_size=32", "--batch=2", "--perception=tiny"],
        "mae": ["--variant=mu/8", "--image_size=32", "--batch=2"],
        "deepfn": ["--variant=4,4,8,8", "--image_size=32", "--batch=2"]}
TRAIN_STEP = {"cla": "train", "nor": "train", "mae": "train", "deepfn": "AE train"}


@pytest.mark.parametrize("model", sorted(TINY))
def test_benchmark_prints_jax_and_torch_rows(model):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count=1 {FAST_COMPILE}",
             JAX_PLATFORMS="cpu", OMP_NUM_THREADS="1",
             PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  cmd = [sys.executable, os.path.join(ROOT, "launch", "benchmark.py"), f"--model={model}",
         *TINY[model], "--notorch_compile", "--warmup=1", "--windows=1", "--steps_per_window=1"]
  out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  text = out.stdout
  print(text)
  step = TRAIN_STEP[model]
  for row in (f"jax {step}", f"torch eager {step}"):
    line = next((l for l in text.splitlines() if l.startswith(f"| {row} |")), None)
    assert line is not None, f"no {row!r} row in\n{text}"
    assert float(line.split("|")[2]) > 0  # images/s
  assert f"| jax {step} |" in text and "x |" in text
  assert f"- JAX {step}:" in text and "GFLOP/step" in text and "MFU" in text
  assert "time to first step" in text and "matmul peak" in text and "input pipeline" in text
  if model == "nor":  # Same weights and pairs: the twin's losses are the JAX step's.
    note = next(l for l in text.splitlines() if l.startswith("| torch eager train |"))
    assert float(note.split("JAX's to ")[1].split()[0].rstrip("|")) < 1e-4, note


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
