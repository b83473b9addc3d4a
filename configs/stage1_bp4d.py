r"""Norface stage 1 on BP4D (paper settings: 256 px, MAE B/16, batch 8).

  python launch/train.py --config=configs/stage1_bp4d.py:perception_dir=W --workdir=workdirs/stage1_bp4d

`synthetic` swaps in SynthFACS (bp4d preset); `runlocal` shrinks it for a CPU.
Args: synthetic, runlocal, perception_dir=W, target=..., steps=N, variant=B/16, dtype=..., fold=K.
"""

from norface_jax.training.stage1_config import stage1_config


def get_config(arg=None):
  return stage1_config(arg, dataset="bp4d")
