"""Stage 2 (F_cla) train and inference steps: JAX vs the PyTorch twin, same batch.

Both sides run the same network (shared ViT over both streams, input MoE per stream,
output MoE, head), the same batch and precision, a cross-entropy loss and AdamW.
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
from norface_jax.benchmark.common import Row, compiled_flops, median_rate
from norface_jax.training import sharding, stage2

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_config(variant: str, image_size: int, batch: int, dtype: str, dispatch: str,
                scan: bool = False, remat: bool = False) -> Any:
  c = configlib.load_config(os.path.join(ROOT, "configs", "affectnet_fer.py") + ":synthetic")
  c.model.encoder = variant
  c.model.dispatch = dispatch
  c.model.scan = scan
  c.model.remat = remat
  c.data.image_size = image_size
  c.input.batch_size = batch
  c.input.eval_batch_size = batch
  c.dtype = dtype
  c.total_steps = 1000
  c.mesh = (("data", -1), ("model", 1))
  for k in list(c.augment):
    c.augment[k] = None if k == "crop_scale" else (False if k == "flip" else 0.0)
  return c


def compile_seconds(config: Any, batch: int) -> float:
  """Wall time from nothing to a compiled train step (abstract state, lower, compile)."""
  t0 = time.perf_counter()
  setup = stage2.build(config, 1)
  size = config.data.image_size
  batch_spec = {"image": jax.ShapeDtypeStruct((batch, size, size, 3), jnp.uint8,
                                              sharding=sharding.batch_sharding(setup.mesh)),
                "image_norm": jax.ShapeDtypeStruct((batch, size, size, 3), jnp.uint8,
                                                   sharding=sharding.batch_sharding(setup.mesh)),
                "emotion": jax.ShapeDtypeStruct((batch,), jnp.int32,
                                                sharding=sharding.batch_sharding(setup.mesh))}
  step_fn = jax.jit(stage2.make_train_step(setup.model, setup.task, config, setup.tx),
                    donate_argnums=(0,))
  step_fn.lower(setup.restore_target(), batch_spec, setup.step_rng).compile()
  return time.perf_counter() - t0


def jax_rows(config: Any, batch: int) -> tuple[list[Row], dict[str, float]]:
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
  step_fn = jax.jit(stage2.make_train_step(setup.model, setup.task, config, setup.tx),
                    in_shardings=(setup.state_shardings, bs, repl),
                    out_shardings=(setup.state_shardings, repl), donate_argnums=(0,))
  compiled = step_fn.lower(state, data, setup.step_rng).compile()
  compile_s = time.perf_counter() - t0
  holder = {"state": state, "metrics": None}

  def train():
    holder["state"], holder["metrics"] = compiled(holder["state"], data, setup.step_rng)

  train_rate = median_rate(train, lambda: jax.block_until_ready(holder["state"]), batch=batch)
  eval_fn = jax.jit(stage2.make_eval_step(setup.model, setup.task, config),
                    in_shardings=(setup.state_shardings.params, bs), out_shardings=repl)
  eval_data = dict(data)
  eval_compiled = eval_fn.lower(holder["state"].params, eval_data).compile()
  out = {}

  def infer():
    out["y"] = eval_compiled(holder["state"].params, eval_data)

  infer_rate = median_rate(infer, lambda: jax.block_until_ready(out["y"]), batch=batch)
  stats = {"train_flops": compiled_flops(compiled), "infer_flops": compiled_flops(eval_compiled),
           "compile_s": compile_s}
  return [Row("jax train", train_rate), Row("jax inference", infer_rate)], stats


def torch_rows(config: Any, batch: int, compile_modes: tuple[bool, ...] = (False, True)) -> list[Row]:
  import torch
  from norface_jax.torch_twins.classifier import NorfaceClassifier
  m = config.model
  size = config.data.image_size
  dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[config.dtype]
  rows = []
  for compiled in compile_modes:
    torch.manual_seed(0)
    model = NorfaceClassifier(encoder=m.encoder, img_size=size, num_outputs=7,
                              streams=tuple(m.streams), num_experts=m.num_experts,
                              top_k=m.top_k).to(dtype)
    for p in model.parameters():  # Non-degenerate weights (the Flax init zeroes the router).
      torch.nn.init.normal_(p, std=0.02)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, size, size, dtype=dtype)
    xn = torch.randn(batch, 3, size, size, dtype=dtype)
    y = torch.randint(0, 7, (batch,))
    name = "torch.compile" if compiled else "torch eager"

    def train_step(model=model):
      opt.zero_grad(set_to_none=True)
      loss = torch.nn.functional.cross_entropy(model(x, xn).float(), y)
      loss.backward()
      opt.step()
      return loss

    fn = train_step
    if compiled:
      try:
        fn = torch.compile(train_step)
        fn()
      except Exception as e:  # Inductor needs a working C++ toolchain on CPU.
        rows.append(Row(f"{name} train", float("nan"), f"failed: {type(e).__name__}"))
        rows.append(Row(f"{name} inference", float("nan"), "skipped"))
        continue
    model.train()
    train_rate = median_rate(lambda: fn(), lambda: None, batch=batch)
    model.eval()
    infer = model
    if compiled:
      infer = torch.compile(model)
    with torch.no_grad():
      infer_rate = median_rate(lambda: infer(x, xn), lambda: None, batch=batch)
    rows += [Row(f"{name} train", train_rate), Row(f"{name} inference", infer_rate)]
  return rows
