r"""DISFA AU intensity estimation (12 AUs, 3-fold CV), Norface stage 2.

  python launch/train.py --config=configs/disfa_au_intensity.py:fold=0 --workdir=workdirs/disfa_au_intensity_fold0

AU datasets: run fold=0,1,2 and average (`python launch/evaluate.py --cv --config=...`).

On SynthFACS (the `disfa` preset: same label space and subjects), tiny, on a CPU:
  python launch/train.py --config=configs/disfa_au_intensity.py:synthetic,runlocal --workdir=/tmp/disfa_au_intensity

Args after the colon: synthetic, runlocal, fold=K, variant=B/16, classes=N, steps=N,
norm=none|precomputed|oracle|online, normalized_dir=DIR, test=DATASET (cross-dataset).
Paper defaults: m=4, k=2, lambda_imp = lambda_g&l = 1e-3, lr 1e-3, 40 epochs.
"""

from norface_jax.training.stage2_config import task_config


def get_config(arg=None):
  return task_config(arg, task="au_intensity", dataset="disfa")
