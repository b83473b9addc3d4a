"""Exportable networks: how each is restored from a workdir, described and converted.

Adding a network is one `register(...)` call here naming its PyTorch
twin class (in `norface_jax.torch_twins.TWINS`), a key mapping
(`norface_jax.interop.keymap`) and how to restore it from a workdir whose
`config.stage` it handles. Networks trained outside a workdir (the DeepFN autoencoder
and LeNet-5) give `from_params` instead and are exported by `export.export_params`.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from norface_jax.interop import keymap


@dataclasses.dataclass(frozen=True)
class Restored:
  """A network restored from a workdir, ready to export."""
  params: Any          # The network's own Flax params (host NumPy).
  step: int
  kwargs: dict[str, Any]            # Twin constructor arguments (JSON-able).
  apply: Callable[..., Any]  # Flax forward on NHWC inputs, outputs in the twin's layout.
  inputs: tuple[str, ...]           # Names of the forward's image arguments.
  image_size: int
  channels: int = 3
  preprocess: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Exportable:
  name: str
  twin_class: str                  # Key of `torch_twins.TWINS`.
  stages: tuple[str, ...]          # `config.stage` values whose workdirs hold it.
  restore: Callable[[ml_collections.ConfigDict, str, str, int | None], Restored]
  state_dict: Callable[[Restored], dict[str, np.ndarray]]
  # (params, twin kwargs) -> Restored, for networks saved outside a training workdir
  # (DeepFN's protocol runner); used by `export.export_params`.
  from_params: Callable[[Any, dict[str, Any]], Restored] | None = None


EXPORTABLES: dict[str, Exportable] = {}


def register(spec: Exportable) -> Exportable:
  EXPORTABLES[spec.name] = spec
  return spec


def for_stage(stage: str) -> Exportable:
  for spec in EXPORTABLES.values():
    if stage in spec.stages:
      return spec
  raise KeyError(f"config.stage={stage!r}: no exportable network; known stages: "
                 f"{sorted(s for e in EXPORTABLES.values() for s in e.stages)}")


def _single_mesh(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of the config whose mesh is pure data parallel (any device count)."""
  config = copy.deepcopy(config)
  config.unlock()
  config.mesh = (("data", -1),)
  config.input.batch_size = jax.device_count()
  return config


def _checkpoint_dir(workdir: str, which: str) -> str:
  best = os.path.join(workdir, "best")
  if which == "best" and os.path.isdir(best) and os.listdir(best):
    return best
  return os.path.join(workdir, "checkpoints")


def _restore_cla(config, workdir: str, which: str, step: int | None) -> Restored:
  from norface_jax.data import images as images_lib
  from norface_jax.training import checkpointing, stage2  # Lazy: heavy imports.
  config = _single_mesh(config)
  if stage2.uses_features(config):
    raise ValueError(f"{workdir}: the 'features' stream (table 9's ablation, fed by the frozen "
                     "stage-1 networks) has no PyTorch twin; export the image-stream models")
  setup = stage2.build(config, num_train_examples=1)
  state, step = checkpointing.restore_state_only(_checkpoint_dir(workdir, which),
                                                 setup.restore_target(), step)
  params = jax.device_get(state.params)
  m = config.model
  kwargs = dict(encoder=m.encoder, img_size=config.data.image_size,
                num_outputs=setup.task.num_outputs, streams=list(m.streams),
                use_input_moe=m.use_input_moe, use_output_moe=m.use_output_moe,
                num_experts=m.num_experts, top_k=m.top_k,
                expert_hidden=m.expert_hidden or None, pool=m.pool,
                pos_embed=m.get("pos_embed", "sincos"), moe_residual=m.get("moe_residual", True))
  model = setup.model.clone(dtype=np.float32)

  def apply(*images):
    out, _ = model.apply({"params": params}, *images, train=False)
    return np.asarray(out)

  inputs = tuple(f"images_{s}" for s in m.streams)
  return Restored(params, int(step), kwargs, apply, inputs, config.data.image_size,
                  preprocess=dict(mean=images_lib.IMAGE_MEAN.tolist(), std=images_lib.IMAGE_STD.tolist(),
                                  scale=1 / 255.0))


def _restore_mae_encoder(config, workdir: str, which: str, step: int | None) -> Restored:
  from norface_jax.models import vit as vit_lib
  from norface_jax.training import checkpointing
  from norface_jax.training import mae as mae_trainer
  config = _single_mesh(config)
  setup = mae_trainer.build(config)
  state, step = checkpointing.restore_state_only(_checkpoint_dir(workdir, which),
                                                 setup.restore_target(), step)
  params = jax.device_get(state.params["encoder"])
  vit = vit_lib.ViT(config.model.encoder, scan=config.model.scan)
  kwargs = dict(variant=config.model.encoder, img_size=config.data.image_size)

  def apply(images):
    return np.asarray(vit.apply({"params": params}, images, train=False))

  return Restored(params, int(step), kwargs, apply, ("images",), config.data.image_size,
                  preprocess=dict(mean=mae_trainer.IMAGE_MEAN.tolist(),
                                  std=mae_trainer.IMAGE_STD.tolist(), scale=1 / 255.0))


def _restore_nor(config, workdir: str, which: str, step: int | None) -> Restored:
  """The generator F_nor (`GanState.g_params`) of a stage-1 workdir."""
  from norface_jax.models import normalizer as normalizer_lib
  from norface_jax.training import checkpointing, stage1
  config = _single_mesh(config)
  setup = stage1.Setup(config)
  state, step = checkpointing.restore_state_only(_checkpoint_dir(workdir, which),
                                                 setup.restore_target(), step)
  params = jax.device_get(state.g_params)
  m = config.model
  kwargs = dict(encoder=m.encoder, img_size=config.data.image_size,
                decoder_channels=[int(c) for c in m.decoder_channels], emm_depth=m.emm_depth)
  model = setup.gen.clone(dtype=np.float32, remat=False)

  def apply(image_o, image_t):
    return _nhwc_to_nchw(model.apply({"params": params}, image_o, image_t, train=False))

  # Inputs and output are RGB in [0, 1]; the network applies the MAE mean/std itself.
  preprocess = dict(scale=1 / 255.0, mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0],
                    range=[0.0, 1.0], output="NCHW RGB in [0, 1]",
                    normalized_inside=dict(mean=normalizer_lib.MAE_MEAN.tolist(),
                                           std=normalizer_lib.MAE_STD.tolist()))
  return Restored(params, int(step), kwargs, apply, ("image_o", "image_t"),
                  config.data.image_size, preprocess=preprocess)


register(Exportable(
    name="cla", twin_class="NorfaceClassifier", stages=("cla",), restore=_restore_cla,
    state_dict=lambda r: keymap.classifier_to_torch(r.params, r.image_size)))
register(Exportable(
    name="vit", twin_class="VisionTransformer", stages=("mae",), restore=_restore_mae_encoder,
    state_dict=lambda r: keymap.vit_to_torch(r.params, r.image_size)))
register(Exportable(
    name="nor", twin_class="NorfaceNormalizer", stages=("nor",), restore=_restore_nor,
    state_dict=lambda r: keymap.normalizer_to_torch(r.params, r.image_size)))


# ----------------------------------------------------------------------------------------
# DeepFN: trained in the protocol runner (no training workdir); exported from the
# params it saves (`norface_jax.deepfn.saved`) with `export.export_params`.

def _no_workdir(config, workdir: str, which: str, step: int | None) -> Restored:
  raise ValueError("DeepFN networks are exported from the params the protocol runner saves "
                   "(config.save_params): launch/export_torch.py --deepfn=W/params/NAME.msgpack")


# `norface_jax.deepfn.preprocess`: resize, BT.601 grayscale, histogram equalization (per
# the saved record's `histeq`), / 255.
_DEEPFN_PREPROCESS = dict(grayscale="BT.601", scale=1 / 255.0,
                          function="norface_jax.deepfn.preprocess.preprocess")


def _nhwc_to_nchw(x) -> np.ndarray:
  return np.asarray(x).transpose(0, 3, 1, 2)


def _deepfn_ae(params, kwargs: dict[str, Any]) -> Restored:
  from norface_jax.deepfn import autoencoder as ae_lib
  model = ae_lib.AutoEncoder(widths=tuple(kwargs["widths"]), latent=kwargs["latent"])

  def apply(images_x, images_y):
    out_x, out_y = model.apply({"params": params}, images_x, images_y)
    return _nhwc_to_nchw(out_x), _nhwc_to_nchw(out_y)

  return Restored(params, 0, dict(kwargs), apply, ("images_x", "images_y"),
                  kwargs["image_size"], channels=kwargs.get("in_channels", 1),
                  preprocess=_DEEPFN_PREPROCESS)


def _deepfn_lenet(params, kwargs: dict[str, Any]) -> Restored:
  from norface_jax.deepfn import lenet as lenet_lib
  model = lenet_lib.LeNet5(num_aus=kwargs["num_aus"])

  def apply(images):
    return np.asarray(model.apply({"params": params}, images))

  return Restored(params, 0, dict(kwargs), apply, ("images",), kwargs["image_size"],
                  channels=kwargs.get("in_channels", 1),
                  preprocess=_DEEPFN_PREPROCESS)


register(Exportable(
    name="deepfn_ae", twin_class="DeepFNAutoEncoder", stages=(), restore=_no_workdir,
    state_dict=lambda r: keymap.deepfn_ae_to_torch(r.params), from_params=_deepfn_ae))
register(Exportable(
    name="deepfn_lenet", twin_class="LeNet5", stages=(), restore=_no_workdir,
    state_dict=lambda r: keymap.lenet_to_torch(r.params), from_params=_deepfn_lenet))
