r"""Norface stage 1 (F_nor, identity normalization) on SynthFACS (bp4d preset), CPU-sized.

  python launch/train.py --config=configs/perception_synthfacs.py --workdir=workdirs/perception
  python launch/train.py --config=configs/stage1_synthfacs.py:perception_dir=workdirs/perception \
      --workdir=workdirs/stage1
  python -m norface_jax.training.stage1_report --workdir=workdirs/stage1

Args: perception_dir=W (required; `random` = untrained nets, smoke tests only),
target=synthfacs:<subject>|<image path>, steps=N, variant=mu/8, dtype=bfloat16, full
(paper size: 256 px, B/16; needs an accelerator).
"""

from norface_jax.configlib import parse_arg
from norface_jax.training.stage1_config import base_config


def get_config(arg=None):
  # F003 is a training subject of fold 0, so the identity classifier knows the target.
  a = parse_arg(arg, perception_dir="", target="synthfacs:F003", steps=0, variant="",
                dtype="float32", full=False)
  c = base_config(dataset="bp4d", synthetic=True, runlocal=not a.full)
  c.perception_dir = a.perception_dir
  c.target = a.target
  c.dtype = a.dtype
  if a.steps:
    c.total_steps = a.steps
  if a.variant:
    c.model.encoder = a.variant
  return c
