r"""SynthFACS perception networks for the stage-1 losses (trained from ground truth).

  python launch/train.py --config=configs/perception_synthfacs.py --workdir=workdirs/perception

then point stage 1 at it: `--config=configs/stage1_synthfacs.py:perception_dir=workdirs/perception`.
Args: preset=bp4d, size=64, steps=N, frames=F (frames per subject), batch=B.
"""

import ml_collections

from norface_jax.configlib import parse_arg


def get_config(arg=None):
  a = parse_arg(arg, preset="bp4d", size=64, steps=600, frames=24, batch=64)
  c = ml_collections.ConfigDict()
  c.stage = "perception"
  c.seed = 0
  c.data = dict(dataset=a.preset, synthetic=True, preset=a.preset, fold=0, seed=0,
                image_size=a.size, frames_per_subject=a.frames, identity_bias=1.0)
  c.nets = dict(layers=(1, 1, 1, 1), widths=(16, 32, 64, 128), id_dim=64, exp_dim=32,
                vgg_cfg=(16, 16, "M", 32, 32, "M", 64, 64, "M", 128, 128),
                eval_cfg=(32, "M", 64, "M", 128, "M", 128))
  c.input = dict(batch_size=a.batch, workers=0, prefetch=2)
  c.optim = dict(lr=1e-3)
  c.total_steps = a.steps
  c.log_every = 50
  c.checkpoint_every = 200
  c.mesh = (("data", -1),)
  return c
