"""Stage 1 (F_nor) train and inference steps: JAX vs a PyTorch twin of the whole step.

JAX: the trainer's own jitted, donated step (`stage1.make_train_step`): pairs drawn on
device, the frozen perception networks on I_t, I_o and I_n, one generator update
(L_adv + the six weighted losses, Adam) and one discriminator update (hinge, Adam).
Inference: the generator on a batch onto one target face, uint8 in and out
(`models.normalizer.normalize_uint8`).

PyTorch: the same step with the twins, started from the same weights
(`interop.keymap`, `interop.torch_perception`): F_nor (`NorfaceNormalizer`), D_res
(`MultiScaleDiscriminator`) and the perception networks (`VGGFeatures`, `IResNet`),
the same losses and weights, two Adams; G's gradients are taken with
`torch.autograd.grad` w.r.t. G's parameters only (as `jax.grad` of the G loss does not
differentiate D's weights), then D updates on the detached I_n.

The config is `stage1_config.base_config(dataset="bp4d", synthetic=True)`, `runlocal`
for the CPU encoders (mu, nano: 3 decoder stages of 64/32/16 channels, D 32/64) and
the paper-sized decoder/discriminator otherwise; a decoder whose stage count does not
fit the patch is halved from its first width. The perception networks are randomly
initialised (their weights do not change the FLOPs): `--perception=synthfacs` (default)
gives the sizes of `configs/perception_synthfacs.py`, the ones the CPU stage 1 trains
against (IResNet (1, 1, 1, 1) x (16, 32, 64, 128) for identity, landmarks, expression
and eyebrows; a 6-conv VGG for L_perc); `--perception=tiny` those of
`perception_dir="random"` (the smoke tests'); `--perception=synthfacs_conv` the
SynthFACS sizes with `exp_arch=conv` (a ConvClassifier behind L_exp). The
evaluation-only ConvClassifiers are not in the step.
"""

from __future__ import annotations

import ast
import functools
import os
import time
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from norface_jax import configlib
from norface_jax.benchmark import common
from norface_jax.models import perception as perception_lib
from norface_jax.models import vit as vit_lib
from norface_jax.models import normalizer as normalizer_lib
from norface_jax.training import perception_nets as perception_nets_lib
from norface_jax.training import loop, sharding, stage1, stage1_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULTS = {"variant": "mu/8", "image_size": 64, "batch": 16}  # The CPU stage-1 size.
CPU_ENCODERS = ("mu", "nano")


def decoder_for_patch(channels: tuple[int, ...], patch: int) -> tuple[int, ...]:
  """`channels` if it has log2(patch) stages, else halvings of its first width."""
  stages = int(round(np.log2(patch)))
  if len(channels) == stages:
    return tuple(channels)
  return tuple(max(channels[0] // 2 ** i, 8) for i in range(stages))


def make_config(opts: common.Options) -> Any:
  patch = vit_lib.decode_variant(opts.variant)["patch_size"]
  runlocal = opts.variant.split("/")[0] in CPU_ENCODERS
  c = stage1_config.base_config(dataset="bp4d", synthetic=True, runlocal=runlocal)
  c.model.encoder = opts.variant
  c.model.remat = opts.remat
  c.model.decoder_channels = decoder_for_patch(tuple(c.model.decoder_channels), patch)
  c.data.image_size = opts.image_size
  c.input.batch_size = opts.batch
  c.input.eval_batch_size = opts.batch
  c.dtype = opts.dtype
  c.perception_dir = "random"
  c.mesh = (("data", -1), ("model", 1))
  return c


def describe(config: Any, opts: common.Options) -> str:
  m = config.model
  return (f"variant={opts.variant} batch={opts.batch} image={opts.image_size} "
          f"decoder={tuple(m.decoder_channels)} disc={tuple(m.disc_channels)}x{m.disc_scales} "
          f"perception={opts.perception} remat={opts.remat}")


def perception_nets(config: Any, opts: common.Options) -> perception_lib.PerceptionNets:
  """Randomly initialised loss networks of the chosen sizes (see the module docstring)."""
  if opts.perception == "tiny":  # What `stage1.load_perception` builds for "random".
    nets = dict(layers=(1, 1, 1, 1), widths=(8, 8, 16, 16), id_dim=16, exp_dim=8,
                vgg_cfg=(8, "M", 16, 16), eval_cfg=(8, "M", 16))
  else:
    arg = ":exp_arch=conv" if opts.perception == "synthfacs_conv" else ""
    c = configlib.load_config(os.path.join(ROOT, "configs", "perception_synthfacs.py") + arg)
    nets = c.nets.to_dict()
  return _random_perception(repr(sorted(nets.items())), int(config.data.image_size))


@functools.lru_cache(maxsize=4)
def _random_perception(nets_repr: str, size: int) -> perception_lib.PerceptionNets:
  """`training.perception_nets.random_perception`, initialised in one jitted call with an `rbg`
  key (the eager, threefry init of seven networks takes longer than compiling the step)."""
  nets = ml_collections.ConfigDict(dict(ast.literal_eval(nets_repr)))
  modules = perception_nets_lib.build_modules(nets, size, num_subjects=4, num_aus=5)
  variables = jax.device_get(jax.jit(
      lambda r: perception_nets_lib.init_variables(modules, size, r))(
          jax.random.key(0, impl="unsafe_rbg")))
  meta = {"image_size": size, "subjects": list(range(4)),
          "au_names": [f"AU{i}" for i in range(5)], "random": True}
  return perception_lib.PerceptionNets(modules, variables, meta)


def _batch(config: Any, batch: int) -> np.ndarray:
  size = config.data.image_size
  return np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), np.uint8)


# describe(config, opts) -> (initial GanState on the host, step-0 metrics, step rng).
_FIRST_STEP: dict[str, tuple[Any, dict[str, Any], jax.Array]] = {}


def jax_rows(config: Any, opts: common.Options) -> list[common.Row]:
  batch = opts.batch
  setup = stage1.Setup(config)
  perception = perception_nets(config, opts)
  mesh = setup.mesh
  bs, repl = sharding.batch_sharding(mesh), sharding.replicated(mesh)
  pv = jax.device_put({k: perception.variables[k] for k in stage1.LOSS_NETS}, repl)
  data = sharding.host_to_global({"image": _batch(config, batch)}, mesh)
  t0 = time.perf_counter()
  state = jax.jit(lambda r: nn.unbox(setup.init_fn(r)), out_shardings=setup.state_shardings)(
      setup.init_rng)
  step_fn = loop.jit_train_step(
      config, mesh, setup.state_shardings,
      stage1.make_train_step(setup.gen, setup.disc, perception.functions(), config, setup.g_tx,
                             setup.d_tx), 1)
  compiled, flops = common.compile_traced(step_fn, state, data, setup.step_rng, pv)
  compile_s = time.perf_counter() - t0
  # The PyTorch twin starts from these weights and checks its losses against step 0's.
  initial = jax.device_get(state)
  state, metrics = compiled(state, data, setup.step_rng, pv)
  _FIRST_STEP[describe(config, opts)] = (initial, jax.device_get(metrics), setup.step_rng)
  train_rate, state = common.time_jax_train(compiled, state, (data, setup.step_rng, pv),
                                            batch=batch, **opts.timing())
  target = jax.device_put(_batch(config, 1)[0], repl)
  infer_fn = jax.jit(lambda p, t, x: normalizer_lib.normalize_uint8(setup.gen, p, t, x),
                     in_shardings=(setup.state_shardings.g_params, repl, bs), out_shardings=bs)
  infer_compiled, infer_flops = common.compile_traced(infer_fn, state.g_params, target,
                                                      data["image"])
  infer_rate = common.time_jax_call(infer_compiled, (state.g_params, target, data["image"]),
                                    batch=batch, **opts.timing())
  return [common.jax_row("jax train", train_rate, compiled, batch, compile_s, model_flops=flops),
          common.jax_row("jax inference", infer_rate, infer_compiled, batch,
                         model_flops=infer_flops)]


# ----------------------------------------------------------------------------------------
# PyTorch.

def _to_torch(state_dict: dict[str, np.ndarray]) -> dict[str, Any]:
  import torch
  return {k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()}


def torch_perception_net(module: Any, variables: Any, image_size: int) -> Any:
  """The PyTorch twin of one loss network (its embedding, as `functions()` returns it)."""
  from norface_jax.interop import torch_perception
  from norface_jax.torch_twins import perception as twins
  if isinstance(module, perception_lib.VGGWithHeads):
    net = twins.VGGFeatures(tuple(module.cfg), num_outputs=2)
    net.features.load_state_dict(_to_torch({
        k[len("features."):]: v for k, v in torch_perception.export_vgg(
            {"params": variables["params"]["features"]}).items()}))
    return net.eval().requires_grad_(False)
  if isinstance(module, perception_lib.WithHead):
    module = module.backbone
    variables = {k: v["backbone"] for k, v in variables.items()}
  if isinstance(module, perception_lib.ConvClassifier):  # exp_arch="conv"
    net = twins.ConvClassifier(tuple(module.cfg), module.num_outputs, module.input_size,
                               module.head, image_size)
    net.load_state_dict(_to_torch(torch_perception.export_conv_classifier(variables)))
    return net.eval().requires_grad_(False)
  if not isinstance(module, perception_lib.IResNet):
    raise TypeError(f"no PyTorch twin for {type(module).__name__}")
  net = twins.IResNet(tuple(module.layers), tuple(module.widths), module.num_features,
                      module.final_bn, module.input_size or image_size)
  net.load_state_dict(_to_torch(torch_perception.export_iresnet(variables)), strict=True)
  return net.eval().requires_grad_(False)


# The stage-1 losses (`losses.normalization`, `losses.adversarial`) in PyTorch; images
# and feature maps NCHW, so "over channels" is dim 1.

def _mse_per_sample(a, b):
  return ((a.float() - b.float()) ** 2).flatten(1).mean(1)


def _unit(x, dim: int = -1):
  x = x.float()
  return x / (x.norm(dim=dim, keepdim=True) + 1e-8)


def reconstruction_loss(x_n, x_t, same):
  same = same.float()
  return (same * _mse_per_sample(x_n, x_t)).sum() / same.sum().clamp_min(1.0)


def perceptual_loss(feats_t, feats_n, normalize: bool = False):
  if normalize:
    return sum(((_unit(t, 1) - _unit(n, 1)) ** 2).sum(1).mean() for t, n in zip(feats_t, feats_n))
  return sum(_mse_per_sample(t, n).mean() for t, n in zip(feats_t, feats_n))


def identity_loss(emb_t, emb_n):
  t, n = emb_t.float(), emb_n.float()
  return (1.0 - (t * n).sum(-1) / (t.norm(dim=-1) * n.norm(dim=-1) + 1e-8)).mean()


def landmark_loss(lm_t, lm_n, contour: int = 17):
  """(B, 68, 2) landmarks; the jaw contour (points 0..16), as `CONTOUR`."""
  return _mse_per_sample(lm_t[:, :contour], lm_n[:, :contour]).mean()


def expression_loss(emb_o, emb_n):
  return _mse_per_sample(_unit(emb_o), _unit(emb_n)).mean()


def eyebrow_loss(brows_o, brows_n):
  return _mse_per_sample(brows_o, brows_n).mean()


def hinge_g_loss(fake_logits):
  return sum(-f.float().mean() for f in fake_logits) / len(fake_logits)


def hinge_d_loss(real_logits, fake_logits):
  import torch
  per = [torch.relu(1.0 - r.float()).mean() + torch.relu(1.0 + f.float()).mean()
         for r, f in zip(real_logits, fake_logits)]
  return sum(per) / len(per)


class TorchStage1:
  """The PyTorch twins (G, D, the loss networks), two Adams and the step's losses."""

  def __init__(self, config: Any, opts: common.Options, state: Any = None):
    """`state`: the JAX `GanState` (host) whose G and D weights to start from; by
    default the trainer's initialisation."""
    import torch
    from norface_jax import torch_twins
    from norface_jax.interop import keymap
    m, size = config.model, config.data.image_size
    self.config = config
    setup = stage1.Setup(config)
    if state is None:
      state = jax.device_get(jax.jit(lambda r: nn.unbox(setup.init_fn(r)))(setup.init_rng))
    self.gen = torch_twins.NorfaceNormalizer(m.encoder, size, tuple(m.decoder_channels),
                                             m.emm_depth)
    self.gen.load_state_dict(_to_torch(keymap.normalizer_to_torch(state.g_params, size)))
    self.disc = torch_twins.MultiScaleDiscriminator(tuple(m.disc_channels), m.disc_scales)
    self.disc.load_state_dict(_to_torch(keymap.discriminator_to_torch(state.d_params)))
    perception = perception_nets(config, opts)
    self.nets = {k: torch_perception_net(perception.modules[k], perception.variables[k], size)
                 for k in stage1.LOSS_NETS}
    o = config.optim
    adam = lambda params, lr, b1: torch.optim.Adam(params, lr=lr, betas=(b1, o.b2), eps=o.eps)
    self.g_params = list(self.gen.parameters())
    self.g_opt = adam(self.g_params, o.lr, o.b1)
    self.d_opt = adam(self.disc.parameters(), *stage1.d_lr_b1(o))
    # As optim.make_optimizer's constant schedule: a linear warm-up from 0 (the rate of update k is k / warmup).
    warmup = int(o.get("warmup_steps", 0))
    ramp = lambda k: min(k / warmup, 1.0) if warmup else 1.0  # noqa: E731
    self.schedules = [torch.optim.lr_scheduler.LambdaLR(opt, ramp)
                      for opt in (self.g_opt, self.d_opt)]
    self.grad_clip = float(o.get("grad_clip", 0.0))
    self.weights = dict(config.loss)
    self.p_same = float(config.p_same)
    self.perc_normalize = bool(config.get("perc_normalize", False))
    self.adv_warmup = int(config.get("adv_warmup_steps", 0))
    self.adv_weight = float(config.get("adv_weight", 1.0))
    self.step = 0  # As the JAX state's step: L_adv's warm-up ramp reads it.

  def g_losses(self, x_o, x_t, same):
    """(total, components, I_n): eq. 3 with the config's weights (NCHW images in [0, 1])."""
    import torch
    n = self.nets
    with torch.no_grad():  # What the frozen networks say about the inputs.
      t_vgg, t_id, t_lm = n["vgg"](x_t), n["identity"](x_t), n["landmarks"](x_t)
      o_exp, o_eye = n["expression"](x_o), n["eyebrow"](x_o)
    x_n = self.gen(x_o, x_t)
    points = lambda y: y.reshape(y.shape[0], -1, 2)  # noqa: E731
    comps = {
        "adv": hinge_g_loss(self.disc(x_t, x_n)),
        "rec": reconstruction_loss(x_n, x_t, same),
        "perc": perceptual_loss(t_vgg, n["vgg"](x_n), self.perc_normalize),
        "id": identity_loss(t_id, n["identity"](x_n)),
        "lm": landmark_loss(points(t_lm), points(n["landmarks"](x_n))),
        "exp": expression_loss(o_exp, n["expression"](x_n)),
        "eye": eyebrow_loss(o_eye, n["eyebrow"](x_n)),
    }
    # L_adv's weight ramps 0 -> adv_weight over the first adv_warmup steps (as
    # stage1.make_train_step).
    ramp = min(self.step / self.adv_warmup, 1.0) if self.adv_warmup else 1.0
    total = self.adv_weight * ramp * comps["adv"] + sum(float(self.weights[f"lambda_{k}"]) * v
                                      for k, v in comps.items() if k != "adv")
    return total, comps, x_n

  def d_loss(self, x_t, x_n):
    return hinge_d_loss(self.disc(x_t, x_t), self.disc(x_t, x_n))

  def pairs(self, x_o):
    """I_t: the batch rolled by a random non-zero shift; with prob. p_same I_t = I_o."""
    import torch
    b = x_o.shape[0]
    shift = torch.randint(1, max(b, 2), (1,))
    x_t = x_o[(torch.arange(b) - shift) % b]
    same = torch.rand(b) < self.p_same
    return torch.where(same[:, None, None, None], x_o, x_t), same

  def train_step(self, images_u8):
    import torch
    x_o = images_u8.float() / 255.0
    x_t, same = self.pairs(x_o)
    g_total, _, x_n = self.g_losses(x_o, x_t, same)
    grads = torch.autograd.grad(g_total, self.g_params)
    for p, g in zip(self.g_params, grads):
      p.grad = g
    if self.grad_clip:
      torch.nn.utils.clip_grad_norm_(self.g_params, self.grad_clip)
    self.g_opt.step()
    d_loss = self.d_loss(x_t, x_n.detach())
    self.d_opt.zero_grad(set_to_none=True)
    d_loss.backward()
    if self.grad_clip:
      torch.nn.utils.clip_grad_norm_(self.disc.parameters(), self.grad_clip)
    self.d_opt.step()
    for schedule in self.schedules:
      schedule.step()
    self.step += 1
    return g_total

  def normalize(self, images_u8, target_u8):
    import torch
    x_o = images_u8.float() / 255.0
    x_t = (target_u8.float() / 255.0).expand_as(x_o)
    return torch.clamp(torch.round(self.gen(x_o, x_t) * 255.0), 0, 255).to(torch.uint8)


def step0_pairs(config: Any, images_u8: np.ndarray, step_rng: jax.Array):
  """(x_o, x_t, same) as torch tensors: the pairs the JAX step draws at step 0."""
  import torch
  b = images_u8.shape[0]
  r_shift, r_same, _ = jax.random.split(jax.random.fold_in(step_rng, 0), 3)
  shift = int(jax.random.randint(r_shift, (), 1, max(b, 2)))
  same = torch.from_numpy(np.array(jax.random.bernoulli(r_same, float(config.p_same), (b,))))
  x_o = torch.from_numpy(images_u8.transpose(0, 3, 1, 2).copy()).float() / 255.0
  return x_o, torch.where(same[:, None, None, None], x_o, torch.roll(x_o, shift, 0)), same


def loss_check(twin: TorchStage1, config: Any, images_u8: np.ndarray, metrics: dict[str, Any],
               step_rng: jax.Array) -> float:
  """Max relative difference of the twin's step-0 losses (7 G terms, total, D hinge)
  from the JAX step's, on the same weights and pairs."""
  import torch
  x_o, x_t, same = step0_pairs(config, images_u8, step_rng)
  with torch.no_grad():
    total, comps, x_n = twin.g_losses(x_o, x_t, same)
    d_loss = twin.d_loss(x_t, x_n)
  got = {**{f"loss/{k}": v for k, v in comps.items()}, "training_loss": total,
         "loss/d_hinge": d_loss}
  return max(abs(float(v) - float(metrics[k])) / max(abs(float(metrics[k])), 1e-6)
             for k, v in got.items())


def torch_calls(config: Any, opts: common.Options) -> list[common.TorchCall]:
  import torch
  torch.manual_seed(0)
  first = _FIRST_STEP.get(describe(config, opts))
  twin = TorchStage1(config, opts, first[0] if first else None)
  host = _batch(config, opts.batch)
  note = ""
  if first:
    note = f"losses at step 0 = JAX's to {loss_check(twin, config, host, first[1], first[2]):.0e}"
  images = torch.from_numpy(host.transpose(0, 3, 1, 2).copy())
  target = images[:1].clone()
  modules = (twin.gen, twin.disc)
  return [common.TorchCall("train", lambda: twin.train_step(images), opts.batch, modules, True,
                           note),
          common.TorchCall("inference", lambda: twin.normalize(images, target), opts.batch,
                           modules, False)]


def input_rate(config: Any, opts: common.Options) -> tuple[float, str]:
  """The Grain loader over cached SynthFACS bp4d faces (the stage-1 trainer's keys)."""
  from norface_jax.benchmark import run
  from norface_jax.data.synthfacs.source import SynthFACSSource
  size = run.synthfacs_size(opts.image_size)
  source = SynthFACSSource("bp4d", "train", size=size, frames_per_subject=4)
  return (run.input_pipeline_rate(source, opts.batch, ("image",)),
          f"Grain, cached SynthFACS bp4d {size} px, 0 workers")
