r"""DeepFN protocol with DISFA as the main dataset (template from DISFA) and BP4D for the
dataset split. DISFA has no tasks: the person-dependent split uses 4 contiguous blocks
of each subject's frames (2 train / 1 validation / 1 test); gender groups come from the
reader's (SynthFACS: sampled) gender.

  python launch/deepfn_protocol.py --config=configs/deepfn_disfa.py:synthetic,runlocal \
      --workdir=/tmp/deepfn_disfa

Args: as configs/deepfn_bp4d.py.
"""

from norface_jax.deepfn.config import protocol_config


def get_config(arg=None):
  return protocol_config(arg, dataset="disfa", cross_dataset="bp4d")
