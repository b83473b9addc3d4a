r"""A tiny stage-2 config for tests (in-process and `launch/train.py` subprocesses).

  python launch/train.py --config=tests/configs/tiny.py:name=affectnet_fer --workdir=/tmp/t
"""

import os

from norface_jax import configlib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def get_config(arg=None):
  a = configlib.parse_arg(arg, name="affectnet_fer", steps=6, select="val")
  c = configlib.load_config(os.path.join(ROOT, "configs", f"{a.name}.py") +
                            f":synthetic,runlocal,select={a.select}")
  c.data.image_size = 64
  if c.task == "fer":
    c.data.num_identities = 48
  c.data.frames_per_subject = 4
  c.input.batch_size = 16
  c.input.eval_batch_size = 32
  c.total_steps = a.steps
  c.log_every = 2
  c.eval_every = a.steps
  c.checkpoint_every = 4
  c.eval.max_examples = 64
  c.mesh = (("data", 4), ("model", 2))
  return c
