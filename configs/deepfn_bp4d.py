r"""DeepFN protocol (table 5) on BP4D with DISFA for the dataset split.

  python launch/deepfn_protocol.py --config=configs/deepfn_bp4d.py --workdir=workdirs/deepfn

On SynthFACS (presets bp4d and disfa), CPU-sized (10-20 minutes on 2 busy cores):
  python launch/deepfn_protocol.py --config=configs/deepfn_bp4d.py:synthetic,runlocal \
      --workdir=/tmp/deepfn

Args after the colon: synthetic, runlocal, tiny (test-sized), reps=N, ae_steps=N,
epochs=N, mode=program|loop (all persons' autoencoders in one program, or one by one).
"""

from norface_jax.deepfn.config import protocol_config


def get_config(arg=None):
  return protocol_config(arg, dataset="bp4d", cross_dataset="disfa")
