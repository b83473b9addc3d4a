r"""The whole method on SynthFACS, end to end, on a CPU in minutes.

  python launch/pipeline.py --config=configs/synthetic_pipeline.py --workdir=workdirs/pipeline

Perception networks -> MAE pre-training -> stage 1 (F_nor) -> normalization onto one
fixed target -> stage 2 with/without identity normalization (AU detection, FER) and the
MoE ablation -> `report.md`. Args: `tiny` (smallest form, for tests), `study` (the
target-identity study over `candidates`), `steps=N` (stage-2 steps).
"""

import ml_collections

from norface_jax.configlib import parse_arg


def get_config(arg=None):
  a = parse_arg(arg, tiny=False, study=False, steps=0)
  c = ml_collections.ConfigDict()
  c.stage = "pipeline"
  c.preset = "bp4d"                 # Person-independent AUs and task-elicited emotions.
  c.image_size = 64
  c.encoder = "mu/8"
  c.identity_bias = 1.0
  c.batch = 32
  c.perception_steps = 300
  c.perception_frames = 48
  c.perception_batch = 16
  c.perception_nets = {}            # Overrides of perception_train's `nets` (widths, ...).
  c.mae_steps = 200
  c.stage1_steps = 400
  c.cla_steps = 300
  c.eval_examples = 1024
  c.target = "synthfacs:F003"       # A training subject of fold 0.
  c.target_candidates = ("synthfacs:F003", "synthfacs:M002", "synthfacs:F012") if a.study else ()
  c.ablations = ("no_mi", "no_mo", "m0", "m2")
  if a.tiny:
    c.perception_steps = 4
    c.perception_frames = 2
    c.mae_steps = 2
    c.stage1_steps = 2
    c.cla_steps = 2
    c.eval_examples = 64
    c.batch = 16
    c.ablations = ("m0",)
    c.perception_nets = dict(widths=(8, 8, 16, 16), vgg_cfg=(8, "M", 16, 16),
                             eval_cfg=(8, "M", 16))
  if a.steps:
    c.cla_steps = a.steps
  return c
