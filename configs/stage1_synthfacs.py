r"""Norface stage 1 on SynthFACS (bp4d preset), CPU-sized: `normalizer.py:synthetic,runlocal`.

  python launch/train.py --config=configs/perception_synthfacs.py --workdir=workdirs/perception
  python launch/train.py --config=configs/stage1_synthfacs.py:perception_dir=workdirs/perception \
      --workdir=workdirs/stage1
  python -m norface_jax.inference.stage1_report --workdir=workdirs/stage1

Args: perception_dir=W (empty: trained first under the workdir; `random` = untrained
nets, smoke tests only), target=synthfacs:<subject>|<image path>, steps=N,
variant=mu/8, dtype=float32|bfloat16 (default: float32; bfloat16 with `full`), full (paper size: 256 px, B/16; needs an accelerator),
paper (the paper's loss weights and optimiser instead of the SynthFACS calibration,
`stage1_config.SYNTHFACS_WEIGHTS`).
"""

from norface_jax.configlib import parse_arg
from norface_jax.training.stage1_config import stage1_config


def get_config(arg=None):
  a = parse_arg(arg, perception_dir="", target="synthfacs:F003", steps=0, variant="",
                dtype="", full=False, paper=False)
  args = [f"synthetic", f"target={a.target}"] + ([f"dtype={a.dtype}"] if a.dtype else [])
  args += [] if a.full else ["runlocal"]
  args += [f"perception_dir={a.perception_dir}"] if a.perception_dir else []
  args += [f"steps={a.steps}"] if a.steps else []
  args += [f"variant={a.variant}"] if a.variant else []
  args += ["paper"] if a.paper else []
  return stage1_config(",".join(args))
