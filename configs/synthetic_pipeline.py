r"""The whole method on SynthFACS, end to end, on a CPU, with its floor and its ceiling.

  python launch/pipeline.py --config=configs/synthetic_pipeline.py --workdir=workdirs/pipeline
  python launch/pipeline.py --config=configs/synthetic_pipeline.py:full --workdir=workdirs/full

Perception networks -> MAE pre-training -> stage 1 (F_nor) -> normalization onto one
fixed target (F_nor, and DeepFN's autoencoders) -> the probes (trivial, linear on pixels,
plain CNN) and stage 2 w/o Idn, with the learned I_n, with DeepFN's and with the oracle
I_n, each over `seeds` -> `report.md` and `report.json`.

Args: `full` (the reproduce setting: 10,800 training faces, longer stage-2 runs, the MoE
ablation), `tiny` (smallest form, for tests), `study` (the target-identity study over
`candidates`), `steps=N` (stage-2 steps), `workers=N` (parallel job processes).

Stage 2 at CPU size trains the ViT from a random encoder (head init lecun_normal: the
MAE fine-tuning head init, 2e-5, keeps a random encoder from learning) at lr 2e-3; with
batch 128 (`full`) it leaves the initial loss after about 500 steps where batch 32 at
1e-3 needed about 1500 (docs/results.md has the runs).
"""

import ml_collections

from norface_jax.configlib import parse_arg


def get_config(arg=None):
  a = parse_arg(arg, tiny=False, full=False, study=False, steps=0, workers=2)
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
  c.eval_examples = 1024
  c.target = "synthfacs:F003"       # A training subject of fold 0.
  c.target_candidates = ("synthfacs:F003", "synthfacs:M002", "synthfacs:F012") if a.study else ()
  c.seeds = (0, 1, 2)
  c.workers = a.workers             # Stage-2 runs and probes in this many processes.
  # Stage 2 (every comparison row): the data and the optimisation.
  c.cla = dict(frames_per_subject=100, test_frames_per_subject=24, batch=64, lr=2e-3,
               warmup_steps=30, steps=300, pool="cls", init_from_mae=False)
  # The probes: linear on 32x32 grey pixels; the plain CNN (cnn_steps 0 = stage 2's steps).
  c.probes = dict(linear_steps=2000, cnn_steps=0, cnn_batch=32, cnn_widths=(16, 32, 64))
  c.deepfn_ae = dict(iterations=30)  # DeepFN's per-person autoencoders (runlocal sizes).
  c.deepfn_ae_size = 0               # Their input size in pixels (0: DeepFN's runlocal 64).
  c.ablations = ()
  if a.full:
    c.perception_steps = 1000
    c.perception_frames = 96
    c.mae_steps = 1000
    c.stage1_steps = 2000
    c.cla.frames_per_subject = 400
    c.cla.batch = 128
    c.cla.steps = 1000
    c.cla.warmup_steps = 100
    c.probes.cnn_widths = (32, 64, 128)
    c.deepfn_ae = dict(iterations=100)
    c.ablations = ("no_mi", "no_mo", "m0", "m2")
  if a.tiny:
    c.perception_steps = 4
    c.perception_frames = 2
    c.mae_steps = 2
    c.stage1_steps = 2
    c.eval_examples = 64
    c.batch = 16
    c.seeds = (0,)
    c.workers = 1
    c.cla = dict(frames_per_subject=2, test_frames_per_subject=2, batch=16, lr=1e-3,
                 warmup_steps=1, steps=2, pool="cls", init_from_mae=False)
    c.probes = dict(linear_steps=2, cnn_steps=2, cnn_batch=8, cnn_widths=(4, 4, 4))
    c.deepfn_ae = dict(iterations=2, steps_per_call=2, batch_size=2, widths=(4, 4, 8, 8),
                       latent=8)
    c.deepfn_ae_size = 32
    c.ablations = ("m0",)
    c.perception_nets = dict(widths=(8, 8, 16, 16), vgg_cfg=(8, "M", 16, 16),
                             eval_cfg=(8, "M", 16))
  if a.steps:
    c.cla.steps = a.steps
  return c
