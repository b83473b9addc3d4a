"""Default values of a stage-2 (F_cla) experiment; `configs/*.py` start from these.

Paper defaults (Norface, sec. 4): m = 4 experts, top-k = 2, lambda_imp = lambda_g&l =
1e-3, 40 epochs, base lr 1e-4 (AU detection), 1e-3 (AU intensity), 2e-5 (FER).
"""

from __future__ import annotations

import ml_collections

TASKS = ("fer", "au_detection", "au_intensity")
VAL_SHARE = 0.15  # Training subjects held out for model selection (eval.select='val').
TASK_LR = {"au_detection": 1e-4, "au_intensity": 1e-3, "fer": 2e-5}
TASK_BEST_METRIC = {"au_detection": ("f1/mean", "max"), "au_intensity": ("icc/mean", "max"),
                    "fer": ("accuracy", "max")}

# Logical parameter axes -> mesh axes. Data parallel by default; 'model' shards the
# MLP/heads (tensor parallel) and 'fsdp' the embedding when such mesh axes exist.
DEFAULT_RULES = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("mlp", "model"),
    ("heads", "model"),
    ("kv", None),
    ("experts", "expert"),
    ("classes", None),
    ("layers", None),
    ("patch", None),
    # Activations (models/activation_sharding.py): split over the batch only, except
    # the heads and MLP hidden units under tensor parallelism and the expert axis.
    ("act_batch", ("data", "fsdp")),
    ("act_len", None),
    ("act_embed", None),
    ("act_heads", "model"),
    ("act_kv", None),
    ("act_mlp", "model"),
    ("act_experts", "expert"),
)


def base_config(*, task: str, dataset: str, preset: str, runlocal: bool,
                synthetic: bool) -> ml_collections.ConfigDict:
  """The full stage-2 config with paper defaults; `runlocal` shrinks it for a CPU."""
  if task not in TASKS:
    raise ValueError(f"task {task!r}; expected one of {TASKS}")
  c = ml_collections.ConfigDict()
  c.stage = "cla"
  c.task = task
  c.seed = 0

  c.data = dict(
      dataset=dataset,            # Reader name (real data) ...
      synthetic=synthetic,        # ... or SynthFACS with the same label space.
      preset=preset,              # SynthFACS preset.
      data_dir="~/tensorflow_datasets",  # Where prepared datasets live.
      fold=0,                     # Subject-exclusive fold (AU datasets).
      image_size=224,
      num_classes=7,              # FER classes (7 basic, 8 with contempt).
      identity_bias=1.0,          # SynthFACS identity look-alike strength.
      frames_per_subject=0,       # SynthFACS: 0 = preset default.
      test_frames_per_subject=0,  # SynthFACS test split: 0 = frames_per_subject.
      num_identities=0,           # SynthFACS FER presets: 0 = preset default.
      # Where I_n (the normalized face) comes from: none | precomputed | oracle | online.
      normalization="oracle" if synthetic else "precomputed",
      normalized_dir="",          # precomputed: folder written by launch/normalize.py.
      stage1_workdir="",          # online: a trained stage-1 workdir (frozen F_nor) ...
      online_target="",           # ... and its target ('' = the stage-1 config's target).
      target_subject=0,           # oracle (SynthFACS): the fixed target identity.
      perception_dir="",          # The "features" stream: stage 1's perception networks.
      test_dataset="",            # Cross-dataset evaluation: another config's dataset.
      test_preset="",
      # Model selection: this share of the training subjects (seeded, subject-exclusive)
      # is held out as the 'val' split (eval.select='val'); 0 trains on all of them.
      val_share=VAL_SHARE,
      val_seed=0,
  )
  c.input = dict(batch_size=64, eval_batch_size=128, workers=0, prefetch=2)
  c.augment = dict(flip=True, crop_scale=(0.8, 1.0), color_jitter=0.2,
                   mixup=0.0, cutmix=0.0, cutout=0.0)

  c.model = dict(
      encoder="B/16",
      # ("orig",) is the paper's "w/o Idn"; ("orig", "features") table 9's "w/ E_exp&E_eye"
      # (the frozen expression and eyebrow networks of data.perception_dir on I_o).
      streams=("orig", "norm"),
      use_input_moe=True,
      use_output_moe=True,
      num_experts=4,
      top_k=2,
      expert_hidden=0,            # 0 = the encoder width.
      pool="cls",
      router_noise=True,
      dispatch="dense",           # dense | gather.
      remat=False,
      remat_policy="",            # With remat: a jax.checkpoint_policies name ("" = none).
      scan=False,
      pos_embed="sincos",         # sincos (MAE) | learned (imported timm ViTs).
      attention="auto",           # auto (cudnn on GPU in bf16, else xla) | xla | cudnn.
      # MoE block form. True (default): x + sum_k G_k Exp_k(LN(x)), pre-norm residual as
      # every transformer MLP, so that at initialisation a block passes e_f through
      # instead of replacing it with a sum of random experts. False: the paper's plain
      # y = sum_k G_k Exp_k(x) (sec. 3.2), for the faithful ablation.
      moe_residual=True,
      # Head kernel init: auto = MAE's trunc_normal(2e-5) with init_from, lecun_normal
      # from a random encoder (the 2e-5 head freezes a random encoder); mae | lecun.
      head_init="auto",
  )
  # Compute dtype; parameters, softmax, normalisation statistics and losses stay float32.
  # runlocal (CPU) runs train in float32.
  c.dtype = "bfloat16"
  # au_pos_weight (AU detection): "balanced" weighs each AU's positives by its
  # negatives-to-positives ratio in the training labels (clipped to [1, 10]; as AU
  # detectors such as JAA-Net weight rare AUs), "none" = plain BCE.
  # lambda_global / lambda_local: the paper's lambda_g&l (1e-3), one weight per term so
  # that table 12's "w/o L_global" and "w/o L_local" rows are lambda_global=0 /
  # lambda_local=0.
  c.loss = dict(lambda_imp=1e-3, lambda_global=1e-3, lambda_local=1e-3, label_smoothing=0.0,
                au_pos_weight="balanced")

  c.optim = dict(name="adamw", lr=TASK_LR[task], b1=0.9, b2=0.999, eps=1e-8,
                 weight_decay=0.05, grad_clip=1.0, warmup_steps=500,
                 end_lr_factor=0.0, layer_decay=0.0)
  c.num_epochs = 40
  c.total_steps = 0               # > 0 overrides num_epochs.

  c.mesh = (("data", -1), ("fsdp", 1), ("model", 1))
  c.mesh_dcn = ()                 # Multi-slice pods: sizes across slices, same axis names.
  c.logical_axis_rules = DEFAULT_RULES
  c.init_from = ""                # Orbax checkpoint dir whose params hold an encoder.
  c.init_from_key = "encoder"     # Subtree of the loaded params to take.

  c.log_every = 50
  c.eval_every = 1000
  c.checkpoint_every = 1000
  c.keep_checkpoints = 2
  best_metric, best_mode = TASK_BEST_METRIC[task]
  # select: 'val' evaluates the held-out training subjects every eval_every steps, keeps
  # the checkpoint best on them (best_metric) and reports the test split there and at
  # the last step; 'last' (the paper's protocol: report after the last epoch) trains on
  # every training subject and reports the test split at the last step.
  c.eval = dict(select="val", best_metric=best_metric, best_mode=best_mode, max_examples=0)
  c.nan_policy = "stop"           # stop | skip (a non-finite update).

  if runlocal:
    c.dtype = "float32"
    c.data.image_size = 64
    c.data.frames_per_subject = 24 if task != "fer" else 0
    c.data.num_identities = 400 if task == "fer" else 0
    c.input.batch_size = 32
    c.input.eval_batch_size = 64
    c.model.encoder = "mu/8"
    # At 64 px SynthFACS's AU cues are 1-2 px strokes; random resized crops resample
    # them away and the tiny model stayed at chance accuracy in 300 steps (flip and
    # mild jitter alone learn). Full-size configs keep the crop.
    c.augment.crop_scale = None
    c.augment.color_jitter = 0.1
    c.num_epochs = 0
    c.total_steps = 300
    c.optim.warmup_steps = 30
    c.optim.lr = 1e-3
    c.log_every = 25
    c.eval_every = 150
    c.checkpoint_every = 150
    c.eval.max_examples = 1024
  return c


def task_config(arg: str | None, *, task: str, dataset: str, num_classes: int = 7,
                **overrides) -> ml_collections.ConfigDict:
  """The standard args of every stage-2 config file, applied to `base_config`.

  Args (after the colon): `synthetic`, `runlocal`, `fold=K`, `variant=B/16`,
  `norm=none|precomputed|oracle|online`, `normalized_dir=DIR`, `test=DATASET`
  (cross-dataset evaluation), `classes=N` (FER), `steps=N` (override the length),
  `fsdp=N`, `tp=N`, `slices=N` (pod meshes), `select=val|last` (model selection on
  held-out training subjects, or the paper's last step), `dtype=float32|bfloat16` (the
  compute dtype; default bfloat16, float32 with `runlocal`).
  """
  from norface_jax.configlib import parse_arg
  a = parse_arg(arg, synthetic=False, runlocal=False, fold=0, variant="B/16", norm="",
                normalized_dir="", test="", classes=num_classes, steps=0, fsdp=1, tp=1, slices=1,
                stage1="", select="val", dtype="")
  c = base_config(task=task, dataset=dataset, preset=dataset, runlocal=a.runlocal,
                  synthetic=a.synthetic)
  c.data.fold = a.fold
  c.data.num_classes = a.classes
  if not a.runlocal:
    c.model.encoder = a.variant
  if a.norm:
    c.data.normalization = a.norm
  c.data.normalized_dir = a.normalized_dir
  c.data.stage1_workdir = a.stage1
  if a.test:
    c.data.test_dataset = a.test
    c.data.test_preset = a.test
  if a.steps:
    c.total_steps = a.steps
  if a.dtype:
    c.dtype = a.dtype
  set_selection(c, a.select)
  # Pods: fsdp shards parameters and optimizer state over the 'fsdp' axis (which also
  # splits the batch), tp shards MLPs and heads over 'model'; slices > 1 makes the
  # mesh hybrid with data parallelism across slices.
  c.mesh = (("data", -1), ("fsdp", a.fsdp), ("model", a.tp))
  if a.slices > 1:
    c.mesh_dcn = (("data", a.slices), ("fsdp", 1), ("model", 1))
  for key, value in overrides.items():
    c[key] = value
  return c


SELECTIONS = ("val", "last")


def set_selection(c: ml_collections.ConfigDict, select: str) -> None:
  """`select='last'` also trains on every training subject (nothing to hold out);
  `select='val'` holds out `VAL_SHARE` of them unless a share is set already."""
  if select not in SELECTIONS:
    raise ValueError(f"select={select!r}; expected one of {SELECTIONS}")
  c.eval.select = select
  if select == "last":
    c.data.val_share = 0.0
  elif c.data.val_share <= 0:
    c.data.val_share = VAL_SHARE
