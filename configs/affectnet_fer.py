r"""AffectNet facial emotion recognition (7 classes; `classes=8` adds contempt), Norface stage 2.

  python launch/train.py --config=configs/affectnet_fer.py --workdir=workdirs/affectnet_fer


On SynthFACS (the `affectnet` preset: same label space), tiny, on a CPU:
  python launch/train.py --config=configs/affectnet_fer.py:synthetic,runlocal --workdir=/tmp/affectnet_fer

Args after the colon: synthetic, runlocal, fold=K, variant=B/16, classes=N, steps=N,
norm=none|precomputed|oracle|online, normalized_dir=DIR, test=DATASET (cross-dataset).
Paper defaults: m=4, k=2, lambda_imp = lambda_g&l = 1e-3, lr 2e-5, 40 epochs.
"""

from norface_jax.training.stage2_config import task_config


def get_config(arg=None):
  return task_config(arg, task="fer", dataset="affectnet")
