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
  c.adv_warmup_steps = 0         # L_adv's weight ramps linearly 0 -> adv_weight over these.
  c.adv_weight = 1.0             # Eq. 3 has none (1); 0 for the oracle diagnostic.
  # D_res's real pair (the paper does not say): "sibling" = [I_t, another face of I_t's
  # subject], so D accepts the target's identity with any expression; "target" =
  # [I_t, I_t], which also rewards copying I_t's expression (docs/stage1.md).
  c.d_real = "target"
  c.perc_normalize = False       # L_perc on channel-unit-normalised features (losses doc).
  # What L_exp compares: the expression network's "embedding" (FECNet's role; unit
  # sphere), or its "head", the AU intensities it regresses (plain L2; SynthFACS nets).
  c.exp_output = "embedding"
  # The fixed target face at inference (grids, evaluation, launch/normalize.py):
  # an image path or `synthfacs:<subject>` (frontal neutral render of a preset subject).
  c.target = "synthfacs:0"
  c.perception_dir = ""          # perception_train workdir; "random" = untrained (tests).
  # Diagnostics (docs/stage1.md): every pair's I_t = `target` (the inference condition),
  # and an L2 to SynthFACS's true I_n with this weight (needs fixed_target, SynthFACS).
  c.fixed_target = False
  c.oracle_weight = 0.0
  c.input = dict(batch_size=8, eval_batch_size=16, workers=0, prefetch=2)
  c.model = dict(encoder="B/16", decoder_channels=(256, 128, 64, 32), emm_depth=2,
                 remat=False, remat_policy="", attention="auto",
                 disc_channels=(64, 128, 256), disc_scales=2)
  # Compute dtype; parameters, normalisation statistics, softmax and losses stay float32.
  c.dtype = "float32" if runlocal else "bfloat16"
  c.loss = dict(PAPER_WEIGHTS)
  # d_lr 0 / d_b1 < 0: D uses G's lr / beta1; warmup_steps: linear lr warm-up from 0,
  # then the constant rate (optim.make_optimizer).
  c.optim = dict(name="adam", schedule="constant", lr=1e-4, d_lr=0.0, b1=0.0, d_b1=-1.0,
                 b2=0.99, eps=1e-8, grad_clip=0.0, warmup_steps=0)
  c.total_steps = 200_000
  c.mesh = (("data", -1), ("fsdp", 1), ("model", 1))
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


# SynthFACS calibration (docs/stage1.md): the paper's lambdas fit its networks' output
# scales, not those of the small SynthFACS perception nets. These were set from the
# unweighted losses of two trivial generators under the SynthFACS nets (64 px; "copy
# I_t" and "mean face blob"), so that (a) the identity-side terms (perc, id, lm) cost
# more for a blob than the expression-side terms (exp, eye) cost for an exact copy of
# I_t, and (b) each weighted term is O(1).
SYNTHFACS_WEIGHTS = {"lambda_rec": 100.0, "lambda_perc": 2.0, "lambda_id": 5.0,
                     "lambda_lm": 500.0, "lambda_exp": 40.0, "lambda_eye": 0.5}


def apply_synthfacs_calibration(c: ml_collections.ConfigDict) -> None:
  """SynthFACS weights; L_perc on channel-normalised features; L_rec on half the pairs;
  D learns 5x slower than G (TTUR); L_adv ramps in over the first 100 steps."""
  c.loss = dict(SYNTHFACS_WEIGHTS)
  c.perc_normalize = True
  c.p_same = 0.5
  c.adv_warmup_steps = 100
  c.optim.lr = 5e-4
  c.optim.d_lr = 1e-4


def stage1_config(arg: str | None, *, dataset: str = "bp4d") -> ml_collections.ConfigDict:
  """A stage-1 config from `name:args` arguments (configs/normalizer.py, stage1_*.py).

  Args: dataset=bp4d (SynthFACS preset or reader), synthetic, runlocal,
  perception_dir=W, target=..., steps=N, variant=B/16, dtype=float32|bfloat16 (default
  bfloat16, float32 with runlocal), fold=K, fsdp=N, tp=N (mesh axes), paper,
  perception_steps=N, oracle (SynthFACS diagnostic: F_nor trained on the fixed target
  with only an L2 to the true I_n, no other loss, p_same 0, Adam beta1 0.9, lr 1e-3
  after a 200-step warm-up, clipping at 1).

  With `synthetic`: the SynthFACS calibration of the loss weights (`paper` keeps the
  paper's), the target `synthfacs:F003` (a training subject of fold 0, so the
  independent identity classifier knows it), and when `perception_dir` is empty the
  trainer first trains the SynthFACS perception networks (`config.perception`) into
  `<workdir>/perception`, or reuses them if they are already there.
  """
  from norface_jax.configlib import parse_arg
  from norface_jax.training import perception_train
  a = parse_arg(arg, dataset=dataset, synthetic=False, runlocal=False, perception_dir="",
                target="", steps=0, variant="", dtype="", fold=0, paper=False, fsdp=1, tp=1,
                perception_steps=0, oracle=False)
  c = base_config(dataset=a.dataset, synthetic=a.synthetic, runlocal=a.runlocal)
  c.perception_dir = a.perception_dir
  if a.synthetic:
    if not a.paper:
      apply_synthfacs_calibration(c)
    c.target = "synthfacs:F003" if a.dataset == "bp4d" else "synthfacs:0"
    c.perception = perception_train.synthfacs_config(
        preset=a.dataset, size=c.data.image_size, fold=a.fold,
        **({"steps": a.perception_steps} if a.perception_steps else {}))
  if a.oracle:  # The diagnostic (docs/stage1.md): one target, only L2 to the true I_n.
    if not a.synthetic:
      raise ValueError("`oracle` needs `synthetic`: only SynthFACS renders the true I_n")
    c.fixed_target, c.oracle_weight, c.adv_weight = True, 100.0, 0.0
    c.loss = {k: 0.0 for k in c.loss}
    # Every pair is the inference condition (no I_t = I_o copies), and the optimizer
    # that learns it at CPU scale (docs/stage1.md: beta1 = 0 without warm-up stalls).
    c.p_same = 0.0
    c.optim.update(lr=1e-3, b1=0.9, d_b1=0.0, warmup_steps=200, grad_clip=1.0)
  if a.target:
    c.target = a.target
  if a.steps:
    c.total_steps = a.steps
  if a.variant:
    c.model.encoder = a.variant
  if a.dtype:
    c.dtype = a.dtype
  c.mesh = (("data", -1), ("fsdp", a.fsdp), ("model", a.tp))
  c.data.fold = a.fold
  return c
