r"""MAE pre-training of the ViT encoder on face crops (E_s / E_f initialisation).

  python launch/train.py --config=configs/mae_pretrain.py --workdir=workdirs/mae_b16

Tiny, on a CPU (SynthFACS faces, `mu/8` at 64 px, as stage 2's `runlocal`):
  python launch/train.py --config=configs/mae_pretrain.py:runlocal --workdir=/tmp/mae

A folder of face crops instead of SynthFACS: `:folder=/path/to/crops` (every image
below it; every 20th is held out). Then stage 2 from the encoder:
  python launch/train.py --config=configs/rafdb_fer.py:synthetic,runlocal \
      --config.init_from=/tmp/mae/checkpoints --workdir=/tmp/rafdb_from_mae

Args after the colon: runlocal, variant=B/16, folder=DIR, preset=affectnet (SynthFACS
preset), size=224, batch=4096, steps=N, epochs=N, dtype=float32|bfloat16 (default
bfloat16, float32 with runlocal), fsdp=N, tp=N (mesh axes).
MAE defaults (He et al. 2022): mask ratio 0.75, decoder 512 wide, 8 blocks, 16 heads,
normalized-pixel loss, AdamW (0.9, 0.95), weight decay 0.05, base lr 1.5e-4 x batch/256
(the trainer applies the scaling), 40 warmup epochs, cosine decay.
"""

import ml_collections

from norface_jax.configlib import parse_arg
from norface_jax.training.stage2_config import DEFAULT_RULES


def get_config(arg=None):
  a = parse_arg(arg, runlocal=False, variant="B/16", folder="", preset="affectnet", size=224,
                batch=4096, steps=0, epochs=800, dtype="", fsdp=1, tp=1)
  c = ml_collections.ConfigDict()
  c.stage = "mae"
  c.seed = 0
  c.data = dict(
      folder=a.folder,              # A folder of face crops; empty: SynthFACS.
      dataset=a.preset, synthetic=True, preset=a.preset, data_dir="~/tensorflow_datasets",
      fold=0, image_size=a.size, num_classes=7, identity_bias=1.0, frames_per_subject=0,
      num_identities=0, normalization="none", normalized_dir="", target_subject=0,
      test_dataset="", test_preset="")
  c.input = dict(batch_size=a.batch, eval_batch_size=256, workers=0, prefetch=2)
  c.augment = dict(flip=True, crop_scale=(0.2, 1.0))
  c.model = dict(encoder=a.variant, decoder_width=512, decoder_depth=8, decoder_heads=16,
                 mask_ratio=0.75, norm_pix_loss=True, remat=False, remat_policy="",
                 scan=False, attention="auto")
  c.dtype = a.dtype or ("float32" if a.runlocal else "bfloat16")  # Parameters stay float32.
  c.optim = dict(name="adamw", base_lr=1.5e-4, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.05,
                 grad_clip=0.0, end_lr_factor=0.0,
                 warmup_steps=0)  # 0: warmup_epochs of the training set.
  c.num_epochs = a.epochs
  c.total_steps = a.steps
  c.warmup_epochs = 40
  c.mesh = (("data", -1), ("fsdp", a.fsdp), ("model", a.tp))
  c.logical_axis_rules = DEFAULT_RULES
  c.init_from = ""
  c.init_from_key = "encoder"
  c.log_every = 50
  c.eval_every = 2000
  c.checkpoint_every = 2000
  c.keep_checkpoints = 2
  c.eval = dict(max_examples=1024, num_images=8)
  if a.runlocal:
    c.data.image_size = 64
    c.data.num_identities = 400
    c.input.batch_size = 32
    c.input.eval_batch_size = 32
    c.model.encoder = "mu/8"  # The encoder of the stage-2 `runlocal` configs.
    c.model.decoder_width, c.model.decoder_depth, c.model.decoder_heads = 64, 2, 4
    c.augment.crop_scale = (0.6, 1.0)
    c.total_steps = a.steps or 300
    c.optim.base_lr = 1.2e-2  # x 32/256: lr 1.5e-3 for the tiny model.
    c.optim.warmup_steps = 30
    c.log_every = 25
    c.eval_every = 150
    c.checkpoint_every = 150
    c.eval.max_examples = 128
  return c
