"""DeepFN steps: the autoencoder iteration and LeNet-5's step, JAX vs the PyTorch twins.

AE (`deepfn.ae_train.AETrainer.step`, jitted, state donated): one iteration is a
template batch updating (E, D_y) and a person batch updating (E, D_x), each drawn on
device from the pre-processed frames, warped (random affine + grid warp, bilinear
sampling) and scored with L1, each with its own Adam; images/s count both batches
(2 x --batch per iteration). Inference: the normalization D_y(E(x)) of a batch.
PyTorch: `torch_twins.DeepFNAutoEncoder` from the same weights (`keymap`), the same
draws and warp written with `F.grid_sample` (benchmark-only), two Adams over
(E, D_y) and (E, D_x), gradients w.r.t. each update's parameters only.

LeNet-5 (`deepfn.classify`'s jitted, donated step: BCE over the AUs, Adam) on 64x64
gray faces, batch `config.lenet.batch_size`, vs `torch_twins.LeNet5`; inference is the
sigmoid probabilities of a batch of the same size.

--variant: `runlocal` (the CPU protocol: AE widths 8..64, latent 64; the default, at
64 px and batch 8), `paper` (widths 128..1024, latent 1024, 128 px, batch 64 in the
paper), or four comma-separated widths (latent = the last).
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from norface_jax.benchmark import common
from norface_jax.deepfn import ae_train, classify
from norface_jax.deepfn import autoencoder as ae_lib
from norface_jax.deepfn import config as deepfn_config
from norface_jax.deepfn import preprocess as preprocess_lib

DEFAULTS = {"variant": "runlocal", "image_size": 64, "batch": 8}
NUM_AUS = 12
LENET_SIZE = 64
FRAMES = 32  # Pre-processed frames per person (and of the template) to draw from.


def make_config(opts: common.Options) -> ml_collections.ConfigDict:
  c = deepfn_config.protocol_config("runlocal", dataset="bp4d", cross_dataset="disfa")
  if opts.variant == "paper":
    c.ae.widths, c.ae.latent = (128, 256, 512, 1024), 1024
  elif opts.variant != "runlocal":
    widths = tuple(int(w) for w in opts.variant.split(","))
    if len(widths) != 4:
      raise ValueError(f"--variant={opts.variant!r}: runlocal, paper or four widths 'a,b,c,d'")
    c.ae.widths, c.ae.latent = widths, widths[-1]
  if opts.image_size % 32:
    raise ValueError(f"the DeepFN AE needs an image side divisible by 32, got {opts.image_size}")
  c.preprocess.ae_size = opts.image_size
  c.data.image_size = opts.image_size
  c.ae.batch_size = opts.batch
  c.ae.dtype = opts.dtype
  return c


def describe(config: Any, opts: common.Options) -> str:
  return (f"variant={opts.variant} AE widths={tuple(config.ae.widths)} latent={config.ae.latent} "
          f"image={config.preprocess.ae_size} batch={config.ae.batch_size} (x2 per iteration); "
          f"LeNet-5 {LENET_SIZE} px batch={config.lenet.batch_size}")


def _frames(n: int, size: int, seed: int) -> np.ndarray:
  return np.random.default_rng(seed).uniform(size=(n, size, size, 1)).astype(np.float32)


def _lenet_batch(config: Any) -> tuple[np.ndarray, np.ndarray]:
  b = config.lenet.batch_size
  rng = np.random.default_rng(2)
  return (rng.uniform(size=(b, LENET_SIZE, LENET_SIZE, 1)).astype(np.float32),
          (rng.uniform(size=(b, NUM_AUS)) < 0.3).astype(np.float32))


def jax_rows(config: Any, opts: common.Options) -> list[common.Row]:
  size, batch = config.preprocess.ae_size, config.ae.batch_size
  trainer = ae_train.make_trainer(config.ae)
  images_x, images_y = jnp.asarray(_frames(FRAMES, size, 0)), jnp.asarray(_frames(FRAMES, size, 1))
  n_x, rng = jnp.int32(FRAMES), jax.random.key(0)
  t0 = time.perf_counter()
  state = jax.jit(trainer.init, static_argnums=(1,))(jax.random.key(1), size)
  compiled, flops = common.compile_traced(jax.jit(trainer.step, donate_argnums=(0,)),
                                          state, images_x, n_x, images_y, rng)
  compile_s = time.perf_counter() - t0
  args = (images_x, n_x, images_y, rng)
  rate, state = common.time_jax_train(compiled, state, args, batch=2 * batch, **opts.timing())
  x = images_x[:batch]
  norm, norm_flops = common.compile_traced(jax.jit(lambda p, x: trainer.model.apply(
      {"params": p}, x, method=ae_lib.AutoEncoder.normalize)), state.params, x)
  norm_rate = common.time_jax_call(norm, (state.params, x), batch=batch, **opts.timing())
  rows = [common.jax_row("jax AE train", rate, compiled, 2 * batch, compile_s, model_flops=flops),
          common.jax_row("jax AE inference", norm_rate, norm, batch, model_flops=norm_flops)]

  lenet = classify.make_trainer(config.lenet, NUM_AUS)
  lx, ly = _lenet_batch(config)
  t0 = time.perf_counter()
  params = lenet.model.init(jax.random.key(2), jnp.zeros((1, LENET_SIZE, LENET_SIZE, 1)))["params"]
  opt_state = lenet.tx.init(params)
  step_fn = classify._step_fn(lenet)  # pylint: disable=protected-access
  step, step_flops = common.compile_traced(step_fn, params, opt_state, lx, ly)
  compile_s = time.perf_counter() - t0

  def lenet_step(state, x, y):
    p, o, loss = step(state[0], state[1], x, y)
    return (p, o), loss

  lb = len(lx)
  rate, (params, _) = common.time_jax_train(lenet_step, (params, opt_state), (lx, ly), batch=lb,
                                            **opts.timing())
  predict_fn = classify._predict_fn(lenet)  # pylint: disable=protected-access
  predict, pred_flops = common.compile_traced(predict_fn, params, lx)
  pred_rate = common.time_jax_call(predict, (params, lx), batch=lb, **opts.timing())
  rows += [common.jax_row("jax LeNet train", rate, step, lb, compile_s, model_flops=step_flops),
           common.jax_row("jax LeNet inference", pred_rate, predict, lb,
                          model_flops=pred_flops)]
  return rows


# ----------------------------------------------------------------------------------------
# PyTorch.

def torch_warp(images, cfg):
  """`deepfn.warp.augment` in PyTorch: (B, 1, S, S) -> (warped inputs, affine targets).

  Same ranges and the same two bilinear samplings per image (edge-clamped); the control
  grid is upsampled with PyTorch's bicubic (a = -0.75, JAX's is -0.5): a timing twin,
  not a numerical one.
  """
  import torch
  import torch.nn.functional as F
  b, _, s, _ = images.shape
  u = lambda *shape: torch.rand(*shape) * 2.0 - 1.0  # noqa: E731
  angle = torch.deg2rad(torch.tensor(cfg.rotation_deg)) * u(b)
  zoom = 1.0 + cfg.scale * u(b)
  shift = cfg.shift * s * u(b, 2)
  centre = (s - 1) / 2.0
  ax = torch.arange(s, dtype=torch.float32)
  r, c = torch.meshgrid(ax - centre, ax - centre, indexing="ij")
  cos, sin = (torch.cos(angle) / zoom)[:, None, None], (torch.sin(angle) / zoom)[:, None, None]
  rows = cos * r - sin * c + centre - shift[:, 0, None, None]
  cols = sin * r + cos * c + centre - shift[:, 1, None, None]
  disp = F.interpolate(torch.randn(b, 2, cfg.grid, cfg.grid) * (cfg.noise * s), size=(s, s),
                       mode="bicubic", align_corners=False)
  r0, c0 = torch.meshgrid(ax, ax, indexing="ij")
  wr, wc = (r0 + disp[:, 0]).clamp(0, s - 1), (c0 + disp[:, 1]).clamp(0, s - 1)

  def sample(img, rr, cc):
    grid = torch.stack([cc, rr], -1) / (s - 1) * 2.0 - 1.0
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=True)

  field = sample(torch.stack([rows, cols], 1), wr, wc)
  return sample(images, field[:, 0], field[:, 1]), sample(images, rows, cols)


def torch_calls(config: Any, opts: common.Options) -> list[common.TorchCall]:
  import torch
  from norface_jax import torch_twins
  from norface_jax.interop import keymap
  size, batch, a = config.preprocess.ae_size, config.ae.batch_size, config.ae
  trainer = ae_train.make_trainer(config.ae)
  state = jax.device_get(jax.jit(trainer.init, static_argnums=(1,))(jax.random.key(1), size))
  torch.manual_seed(0)
  ae = torch_twins.DeepFNAutoEncoder(tuple(a.widths), a.latent, size)
  ae.load_state_dict({k: torch.from_numpy(v) for k, v in
                      keymap.deepfn_ae_to_torch(state.params).items()}, strict=True)
  adam = lambda ps, c: torch.optim.Adam(ps, lr=c.lr, betas=(c.b1, c.b2))  # noqa: E731
  sub = {d: list(ae.encoder.parameters()) + list(getattr(ae, d).parameters())
         for d in ("decoder_x", "decoder_y")}
  optimizers = {d: adam(ps, a) for d, ps in sub.items()}
  frames = {"decoder_x": torch.from_numpy(_frames(FRAMES, size, 0).transpose(0, 3, 1, 2).copy()),
            "decoder_y": torch.from_numpy(_frames(FRAMES, size, 1).transpose(0, 3, 1, 2).copy())}
  warp = trainer.warp

  def update(decoder):
    idx = torch.randint(0, FRAMES, (batch,))
    inputs, targets = torch_warp(frames[decoder][idx], warp)
    recon = getattr(ae, decoder)(ae.encoder(inputs))
    loss = (recon.float() - targets).abs().mean()
    for p, g in zip(sub[decoder], torch.autograd.grad(loss, sub[decoder])):
      p.grad = g
    optimizers[decoder].step()
    return loss

  def ae_step():  # Template batch, then person batch (as AETrainer.step).
    return update("decoder_y") + update("decoder_x")

  x = frames["decoder_x"][:batch]
  lenet = torch_twins.LeNet5(NUM_AUS, LENET_SIZE)
  lopt = adam(lenet.parameters(), config.lenet)
  lx, ly = (torch.from_numpy(v) for v in _lenet_batch(config))
  lx = lx.permute(0, 3, 1, 2).contiguous()

  def lenet_step():
    lopt.zero_grad(set_to_none=True)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(lenet(lx).float(), ly)
    loss.backward()
    lopt.step()
    return loss

  lb = len(lx)
  return [common.TorchCall("AE train", ae_step, 2 * batch, (ae,), True),
          common.TorchCall("AE inference", lambda: ae.normalize(x), batch, (ae,), False),
          common.TorchCall("LeNet train", lenet_step, lb, (lenet,), True),
          common.TorchCall("LeNet inference", lambda: torch.sigmoid(lenet(lx)), lb, (lenet,),
                           False)]


def input_rate(config: Any, opts: common.Options) -> tuple[float, str]:
  """DeepFN pre-processing (resize, grayscale, histogram equalization; jitted) of
  SynthFACS frames. It runs once per protocol run: the steps draw from its output."""
  from norface_jax.benchmark import run
  from norface_jax.data.synthfacs.source import SynthFACSSource
  size = run.synthfacs_size(config.data.image_size)
  source = SynthFACSSource("bp4d", "train", size=size, frames_per_subject=2)
  frames = np.stack([source[i]["image"] for i in range(min(len(source), 64))])
  out = {}

  def call():
    out["y"] = preprocess_lib.preprocess_jit(frames, config.preprocess.ae_size, True)

  rate = common.median_rate(call, lambda: jax.block_until_ready(out["y"]), batch=len(frames),
                            **opts.timing())
  return rate, (f"DeepFN pre-processing of SynthFACS {size} px frames to "
                f"{config.preprocess.ae_size} px gray, jitted, batches of {len(frames)}")
