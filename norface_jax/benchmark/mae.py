"""MAE pre-training step: JAX (`training.mae`) vs a plain-PyTorch MAE of the same size.

JAX: the trainer's jitted, donated step (`mae.make_train_step`): normalise, random
masking (ratio 0.75), the encoder on the visible patches, the decoder on all tokens,
the normalized-pixel loss on the masked patches, AdamW with its warm-up/cosine
schedule. Augmentation (random resized crop, flip) is off, as the twin has none.
Inference: the trainer's eval step (the same forward with a fixed mask, the loss and
the predictions).

PyTorch: `torch_twins.MaskedAutoencoder` (the ViT twin's blocks as encoder, the same
decoder), started from the JAX weights (`keymap.mae_to_torch`), its own random masking,
the same loss, `torch.optim.AdamW`.

The config is `configs/mae_pretrain.py` with the variant, size, batch and dtype
flags: its `runlocal` decoder (64 wide, 2 blocks, 4 heads) for the CPU encoders (mu,
nano), MAE's (512 wide, 8 blocks, 16 heads) otherwise.
"""

from __future__ import annotations

import os
import time
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from norface_jax import configlib
from norface_jax.benchmark import common
from norface_jax.data import images as images_lib
from norface_jax.models import vit as vit_lib
from norface_jax.training import mae as mae_train
from norface_jax.training import loop, sharding

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULTS = {"variant": "mu/8", "image_size": 64, "batch": 32}  # configs/mae_pretrain.py:runlocal
CPU_ENCODERS = ("mu", "nano")


def make_config(opts: common.Options) -> Any:
  runlocal = opts.variant.split("/")[0] in CPU_ENCODERS
  c = configlib.load_config(os.path.join(ROOT, "configs", "mae_pretrain.py")
                            + (":runlocal" if runlocal else ""))
  c.model.encoder = opts.variant
  c.model.scan = opts.scan
  c.model.remat = opts.remat
  c.data.image_size = opts.image_size
  c.input.batch_size = opts.batch
  c.input.eval_batch_size = opts.batch
  c.dtype = opts.dtype
  c.total_steps = 1000
  c.optim.warmup_steps = 100
  c.augment.flip = False
  c.augment.crop_scale = None
  c.mesh = (("data", -1), ("model", 1))
  return c


def describe(config: Any, opts: common.Options) -> str:
  m = config.model
  return (f"variant={opts.variant} batch={opts.batch} image={opts.image_size} "
          f"decoder={m.decoder_width}x{m.decoder_depth} ({m.decoder_heads} heads) "
          f"mask={m.mask_ratio} norm_pix={m.norm_pix_loss} scan={opts.scan} remat={opts.remat}")


def _batch(config: Any, batch: int) -> np.ndarray:
  size = config.data.image_size
  return np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), np.uint8)


def jax_rows(config: Any, opts: common.Options) -> list[common.Row]:
  batch = opts.batch
  setup = mae_train.build(config, 1)
  bs, repl = sharding.batch_sharding(setup.mesh), sharding.replicated(setup.mesh)
  data = sharding.host_to_global({"image": _batch(config, batch)}, setup.mesh)
  t0 = time.perf_counter()
  state = jax.jit(lambda r: nn.unbox(setup.init_fn(r)), out_shardings=setup.state_shardings)(
      setup.init_rng)
  step_fn = loop.jit_train_step(config, setup.mesh, setup.state_shardings,
                                mae_train.make_train_step(setup.model, config, setup.tx), 0)
  compiled, flops = common.compile_traced(step_fn, state, data, setup.step_rng)
  compile_s = time.perf_counter() - t0
  train_rate, state = common.time_jax_train(compiled, state, (data, setup.step_rng), batch=batch,
                                            **opts.timing())
  eval_fn = jax.jit(mae_train.make_eval_step(setup.model, config),
                    in_shardings=(setup.state_shardings.params, bs), out_shardings=repl)
  eval_compiled, eval_flops = common.compile_traced(eval_fn, state.params, data)
  infer_rate = common.time_jax_call(eval_compiled, (state.params, data), batch=batch,
                                    **opts.timing())
  return [common.jax_row("jax train", train_rate, compiled, batch, compile_s, model_flops=flops),
          common.jax_row("jax inference", infer_rate, eval_compiled, batch,
                         model_flops=eval_flops)]


def torch_calls(config: Any, opts: common.Options) -> list[common.TorchCall]:
  import torch
  from norface_jax import torch_twins
  from norface_jax.interop import keymap
  from norface_jax.torch_twins import mae as torch_mae
  m, size = config.model, config.data.image_size
  setup = mae_train.build(config, 1)
  params = jax.device_get(jax.jit(lambda r: nn.unbox(setup.init_fn(r)))(setup.init_rng).params)
  torch.manual_seed(0)
  model = torch_twins.MaskedAutoencoder(m.encoder, size, m.decoder_width, m.decoder_depth,
                                        m.decoder_heads, m.mask_ratio)
  model.load_state_dict({k: torch.from_numpy(v) for k, v in
                         keymap.mae_to_torch(params, size).items()}, strict=True)
  o = config.optim
  opt = torch.optim.AdamW(model.parameters(), lr=mae_train.effective_lr(config),
                          betas=(o.b1, o.b2), eps=o.eps, weight_decay=o.weight_decay)
  patch = vit_lib.decode_variant(m.encoder)["patch_size"]
  images = torch.from_numpy(_batch(config, opts.batch).transpose(0, 3, 1, 2).copy())
  mean = torch.tensor(images_lib.IMAGE_MEAN).reshape(1, 3, 1, 1)
  std = torch.tensor(images_lib.IMAGE_STD).reshape(1, 3, 1, 1)

  def loss():
    x = (images.float() / 255.0 - mean) / std
    out = model(x)
    target = torch_mae.patch_targets(x, patch, m.norm_pix_loss)
    return torch_mae.reconstruction_loss(out["pred"], target, out["mask"])

  def train_step():
    opt.zero_grad(set_to_none=True)
    value = loss()
    value.backward()
    opt.step()
    return value

  return [common.TorchCall("train", train_step, opts.batch, (model,), True),
          common.TorchCall("inference", loss, opts.batch, (model,), False)]


def input_rate(config: Any, opts: common.Options) -> tuple[float, str]:
  """The Grain loader over cached SynthFACS FER faces (the MAE trainer's keys)."""
  from norface_jax.benchmark import run
  from norface_jax.data.synthfacs.source import SynthFACSSource
  size = run.synthfacs_size(opts.image_size)
  source = SynthFACSSource("affectnet", "train", size=size, num_identities=max(16, opts.batch // 2),
                           num_classes=7)
  return (run.input_pipeline_rate(source, opts.batch, ("image",)),
          f"Grain, cached SynthFACS {size} px, 0 workers")
