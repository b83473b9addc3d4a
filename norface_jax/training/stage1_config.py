"""Default values of a stage-1 (F_nor) experiment; `configs/stage1_*.py` start from these.

Paper defaults (Norface sec. 3.1, 4): 256x256 faces, MAE ViT encoder, Adam beta1 = 0,
beta2 = 0.99, lr 1e-4, batch 8; lambda_rec=10, lambda_perc=5, lambda_id=10,
lambda_lm=5000, lambda_exp=5000, lambda_eye=10; hinge adversarial loss.
The probability of drawing I_t = I_o (so that L_rec applies) is not given in the
paper; `p_same` defaults to 0.2.
"""

from __future__ import annotations

import ml_collections

from norface_jax.losses.normalization import PAPER_WEIGHTS
from norface_jax.training.stage2_config import DEFAULT_RULES


def base_config(*, dataset: str, synthetic: bool, runlocal: bool) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.stage = "nor"
  c.seed = 0
  c.data = dict(
      dataset=dataset, synthetic=synthetic, preset=dataset, data_dir="~/tensorflow_datasets",
      fold=0, seed=0, image_size=256, frames_per_subject=0, identity_bias=1.0,
      num_identities=0, num_classes=7, normalization="none", normalized_dir="",
      target_subject=0, test_dataset="", test_preset="")
  c.p_same = 0.2                 # P(I_t = I_o): the pairs L_rec supervises.
  c.adv_warmup_steps = 0         # L_adv's weight ramps linearly 0 -> 1 over these steps.
  c.perc_normalize = False       # L_perc on channel-unit-normalised features (losses doc).
  # The fixed target face at inference (grids, evaluation, launch/normalize.py):
  # an image path or `synthfacs:<subject>` (frontal neutral render of a preset subject).
  c.target = "synthfacs:0"
  c.perception_dir = ""          # perception_train workdir; "random" = untrained (tests).
  c.input = dict(batch_size=8, eval_batch_size=16, workers=0, prefetch=2)
  c.model = dict(encoder="B/16", decoder_channels=(256, 128, 64, 32), emm_depth=2,
                 remat=False, disc_channels=(64, 128, 256), disc_scales=2)
  c.dtype = "float32"            # Compute dtype (bfloat16 on accelerators).
  c.loss = dict(PAPER_WEIGHTS)
  c.optim = dict(lr=1e-4, d_lr=0.0, b1=0.0, b2=0.99, eps=1e-8, grad_clip=0.0)  # d_lr 0: = lr
  c.total_steps = 200_000
  c.mesh = (("data", -1), ("model", 1))
  c.logical_axis_rules = DEFAULT_RULES
  c.init_from = ""               # Orbax checkpoint whose params hold a (MAE) ViT ...
  c.init_from_key = "encoder"    # ... under this key, grafted into E_s.
  c.log_every = 50
  c.eval_every = 2000
  c.checkpoint_every = 2000
  c.keep_checkpoints = 2
  c.eval = dict(max_examples=256, grid_size=8)
  c.nan_policy = "stop"
  if runlocal:
    c.data.image_size = 64
    c.data.frames_per_subject = 24
    c.input.batch_size = 16
    c.input.eval_batch_size = 32
    c.model.encoder = "mu/8"
    c.model.decoder_channels = (64, 32, 16)
    c.model.disc_channels = (32, 64)
    c.total_steps = 300
    c.log_every = 25
    c.eval_every = 150
    c.checkpoint_every = 150
    c.eval.max_examples = 128
  return c


def stage1_config(arg: str | None, *, dataset: str) -> ml_collections.ConfigDict:
  """Args: synthetic, runlocal, perception_dir=W, target=..., steps=N, variant=B/16, dtype=..."""
  from norface_jax.configlib import parse_arg
  a = parse_arg(arg, synthetic=False, runlocal=False, perception_dir="", target="",
                steps=0, variant="", dtype="float32", fold=0)
  c = base_config(dataset=dataset, synthetic=a.synthetic, runlocal=a.runlocal)
  c.perception_dir = a.perception_dir
  if a.target:
    c.target = a.target
  if a.steps:
    c.total_steps = a.steps
  if a.variant:
    c.model.encoder = a.variant
  c.dtype = a.dtype
  c.data.fold = a.fold
  return c
