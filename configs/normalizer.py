r"""Norface stage 1: F_nor, the identity normalization network (paper sec. 3.1).

  # SynthFACS on a CPU: trains the perception networks (into W/perception), then F_nor.
  python launch/train.py --config=configs/normalizer.py:synthetic,runlocal --workdir=W
  python launch/normalize.py --checkpoint=W --out=W/normalized
  # BP4D, paper size (256 px, B/16), with imported perception weights:
  python launch/train.py --config=configs/normalizer.py:perception_dir=P --workdir=W

Args: dataset=bp4d, synthetic, runlocal, perception_dir=W, target=synthfacs:<subject>|
<image path>, steps=N, variant=B/16, dtype=float32|bfloat16, fold=K, paper (the
paper's loss weights under `synthetic`), perception_steps=N, oracle (with `synthetic`: the
diagnostic that trains F_nor on the fixed target with only an L2 to SynthFACS's true
I_n, no copy pairs, Adam beta1 0.9 with a 200-step warm-up). See
`norface_jax/training/stage1_config.py` and docs/stage1.md.
"""

from norface_jax.training.stage1_config import stage1_config


def get_config(arg=None):
  return stage1_config(arg)
