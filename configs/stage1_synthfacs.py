r"""Norface stage 1 (F_nor, identity normalization) on SynthFACS (bp4d preset), CPU-sized.

  python launch/train.py --config=configs/perception_synthfacs.py --workdir=workdirs/perception
  python launch/train.py --config=configs/stage1_synthfacs.py:perception_dir=workdirs/perception \
      --workdir=workdirs/stage1
  python -m norface_jax.training.stage1_report --workdir=workdirs/stage1

Args: perception_dir=W (required; `random` = untrained nets, smoke tests only),
target=synthfacs:<subject>|<image path>, steps=N, variant=mu/8, dtype=bfloat16, full
(paper size: 256 px, B/16; needs an accelerator), paper (the paper's loss weights and
optimiser instead of the SynthFACS calibration below).

SynthFACS calibration (docs/stage1.md): the paper's lambdas fit its networks' output
scales, not those of the small SynthFACS perception nets. The weights below were set
from the unweighted losses of two trivial generators measured with the SynthFACS nets
(64 px; "copy I_t" and "mean face blob"), so that (a) the identity-side terms
(perc, id, lm) cost more for a blob than the expression-side terms (exp, eye) cost for
an exact copy of I_t, and (b) each weighted term is O(1). L_perc uses channel-normalised
features; L_rec is supervised on half the pairs; D learns 5x slower than G (TTUR) and
L_adv ramps in over the first 100 steps.
"""

from norface_jax.configlib import parse_arg
from norface_jax.training.stage1_config import base_config

SYNTHFACS_WEIGHTS = {"lambda_rec": 100.0, "lambda_perc": 2.0, "lambda_id": 5.0,
                     "lambda_lm": 500.0, "lambda_exp": 40.0, "lambda_eye": 0.5}


def get_config(arg=None):
  # F003 is a training subject of fold 0, so the identity classifier knows the target.
  a = parse_arg(arg, perception_dir="", target="synthfacs:F003", steps=0, variant="",
                dtype="float32", full=False, paper=False)
  c = base_config(dataset="bp4d", synthetic=True, runlocal=not a.full)
  if not a.paper:
    c.loss = dict(SYNTHFACS_WEIGHTS)
    c.perc_normalize = True
    c.p_same = 0.5
    c.adv_warmup_steps = 100
    c.optim.lr = 5e-4
    c.optim.d_lr = 1e-4
  c.perception_dir = a.perception_dir
  c.target = a.target
  c.dtype = a.dtype
  if a.steps:
    c.total_steps = a.steps
  if a.variant:
    c.model.encoder = a.variant
  return c
