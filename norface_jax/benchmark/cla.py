"""Stage 2 (F_cla) train and inference steps: JAX vs the PyTorch twin, same batch.

Both sides run the same network (shared ViT over both streams, input MoE per stream,
output MoE, head), the same batch and precision (bfloat16: the JAX compute dtype,
PyTorch autocast; float32 parameters on both sides), a cross-entropy loss and AdamW.
Augmentation is off on both sides (the JAX trainer does it on device; the twin has
none), and the JAX step also computes the router losses (negligible FLOPs).
"""

from __future__ import annotations

import os
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from norface_jax import configlib
from norface_jax.benchmark import common
from norface_jax.training import loop, sharding, stage2

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULTS = {"variant": "S/16", "image_size": 224, "batch": 8}


def make_config(opts: common.Options) -> Any:
  c = configlib.load_config(os.path.join(ROOT, "configs", "affectnet_fer.py") + ":synthetic")
  c.model.encoder = opts.variant
  c.model.dispatch = opts.dispatch
  c.model.scan = opts.scan
  c.model.remat = opts.remat
  c.data.image_size = opts.image_size
  c.input.batch_size = opts.batch
  c.input.eval_batch_size = opts.batch
  c.dtype = opts.dtype
  c.total_steps = 1000
  c.mesh = (("data", -1), ("model", 1))
  for k in list(c.augment):
    c.augment[k] = None if k == "crop_scale" else (False if k == "flip" else 0.0)
  return c


def compile_abstract(config: Any, batch: int):
  """The stage-2 train step compiled as the trainer compiles it (`loop.jit_train_step`)
  for `batch` images, from shapes alone: nothing is initialised or run."""
  setup = stage2.build(config, 1)
  size = config.data.image_size
  bs = sharding.batch_sharding(setup.mesh)
  spec = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=bs)  # noqa: E731
  data = {"image": spec((batch, size, size, 3), jnp.uint8),
          "image_norm": spec((batch, size, size, 3), jnp.uint8),
          "emotion": spec((batch,), jnp.int32)}
  step = loop.jit_train_step(config, setup.mesh, setup.state_shardings,
                             stage2.make_train_step(setup.model, setup.task, config, setup.tx), 0)
  return step.lower(setup.restore_target(), data, setup.step_rng).compile()


def compile_seconds(config: Any, batch: int) -> float:
  """Wall time from nothing to a compiled train step (abstract state, lower, compile)."""
  t0 = time.perf_counter()
  compile_abstract(config, batch)
  return time.perf_counter() - t0


def describe(config: Any, opts: common.Options) -> str:
  return (f"variant={opts.variant} batch={opts.batch} image={opts.image_size} "
          f"dispatch={opts.dispatch} scan={opts.scan} remat={opts.remat}")


def jax_rows(config: Any, opts: common.Options) -> list[common.Row]:
  batch = opts.batch
  setup = stage2.build(config, 1)
  t0 = time.perf_counter()
  state = jax.jit(lambda r: nn.unbox(setup.init_fn(r)), out_shardings=setup.state_shardings)(
      setup.init_rng)
  size = config.data.image_size
  rng = np.random.default_rng(0)
  host = {"image": rng.integers(0, 256, (batch, size, size, 3), np.uint8),
          "image_norm": rng.integers(0, 256, (batch, size, size, 3), np.uint8),
          "emotion": rng.integers(0, 7, (batch,)).astype(np.int32)}
  data = sharding.host_to_global(host, setup.mesh)
  bs, repl = sharding.batch_sharding(setup.mesh), sharding.replicated(setup.mesh)
  step_fn = loop.jit_train_step(config, setup.mesh, setup.state_shardings,
                                stage2.make_train_step(setup.model, setup.task, config, setup.tx),
                                0)
  compiled, flops = common.compile_traced(step_fn, state, data, setup.step_rng)
  compile_s = time.perf_counter() - t0
  train_rate, state = common.time_jax_train(compiled, state, (data, setup.step_rng), batch=batch,
                                            **opts.timing())
  eval_fn = jax.jit(stage2.make_eval_step(setup.model, setup.task, config),
                    in_shardings=(setup.state_shardings.params, bs), out_shardings=repl)
  eval_compiled, eval_flops = common.compile_traced(eval_fn, state.params, data)
  infer_rate = common.time_jax_call(eval_compiled, (state.params, data), batch=batch,
                                    **opts.timing())
  return [common.jax_row("jax train", train_rate, compiled, batch, compile_s, model_flops=flops),
          common.jax_row("jax inference", infer_rate, eval_compiled, batch,
                         model_flops=eval_flops)]


def torch_calls(config: Any, opts: common.Options) -> list[common.TorchCall]:
  """Fresh twin, AdamW and batch (float32; `torch_rows` adds autocast for bfloat16)."""
  import torch
  from norface_jax.torch_twins.classifier import NorfaceClassifier
  m = config.model
  size, batch = config.data.image_size, opts.batch
  torch.manual_seed(0)
  model = NorfaceClassifier(encoder=m.encoder, img_size=size, num_outputs=7,
                            streams=tuple(m.streams), num_experts=m.num_experts,
                            top_k=m.top_k)
  for p in model.parameters():  # Non-degenerate weights (the Flax init zeroes the router).
    torch.nn.init.normal_(p, std=0.02)
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
  x = torch.randn(batch, 3, size, size)
  xn = torch.randn(batch, 3, size, size)
  y = torch.randint(0, 7, (batch,))

  def train_step():
    opt.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(model(x, xn).float(), y)
    loss.backward()
    opt.step()
    return loss

  return [common.TorchCall("train", train_step, batch, (model,), True),
          common.TorchCall("inference", lambda: model(x, xn), batch, (model,), False)]


def input_rate(config: Any, opts: common.Options) -> tuple[float, str]:
  """The Grain loader over cached SynthFACS FER items (image, image_norm, emotion)."""
  from norface_jax.benchmark import run
  from norface_jax.data.synthfacs.source import SynthFACSSource
  size = run.synthfacs_size(opts.image_size)
  source = SynthFACSSource("affectnet", "train", size=size, num_identities=max(16, opts.batch // 2),
                           num_classes=7, normalized_target=0)
  rate = run.input_pipeline_rate(source, opts.batch, ("image", "image_norm", "emotion"))
  return rate, f"Grain, cached SynthFACS {size} px, 0 workers"
