"""Imports a timm/MAE PyTorch ViT checkpoint as an `init_from` checkpoint for training.

  python launch/import_torch.py --checkpoint=mae_pretrain_vit_base.pth --out=W [--variant=B/16]
  python launch/train.py --config=configs/rafdb_fer.py --config.init_from=W/checkpoints --workdir=...

A timm ViT with a learned `pos_embed` keeps it (resampled to --image_size); train it with
the learned-position ViT at that size:

  python launch/import_torch.py --checkpoint=vit_base_patch16_224.pth --out=W --image_size=224
  python launch/train.py --config=configs/rafdb_fer.py --config.init_from=W/checkpoints \
      --config.model.pos_embed=learned --config.data.image_size=224 --workdir=...

See docs/interop.md (position embeddings, ignored keys).
"""

from absl import app, flags

from norface_jax import console
from norface_jax.interop import import_timm

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, ".pth/.pt/.safetensors file.")
_OUT = flags.DEFINE_string("out", None, "Output directory (writes OUT/checkpoints).")
_VARIANT = flags.DEFINE_string("variant", "", "ViT variant, e.g. B/16 (default: inferred).")
_IMAGE_SIZE = flags.DEFINE_integer(
    "image_size", 0, "Target resolution (optional): validated, and a learned pos_embed is "
    "resampled to its grid (give the training config's data.image_size).")
_SCAN = flags.DEFINE_bool("scan", False, "Stack blocks for a config with model.scan=True.")
_POS_EMBED = flags.DEFINE_enum(
    "pos_embed", "auto", ["auto", "learned", "sincos"],
    "auto: keep a learned pos_embed (train with model.pos_embed=learned), drop a sin-cos one.")
flags.mark_flags_as_required(["checkpoint", "out"])


def main(argv):
  del argv
  console.setup()
  sd = import_timm.load_state_dict(_CHECKPOINT.value)
  params, info = import_timm.convert(sd, variant=_VARIANT.value, image_size=_IMAGE_SIZE.value,
                                     scan=_SCAN.value, pos_embed=_POS_EMBED.value)
  directory = import_timm.write_init_checkpoint(params, _OUT.value, info)
  print(f"imported {info['variant']} -> {directory}; train with "
        f"config.model.pos_embed={info['pos_embed_mode']}")


if __name__ == "__main__":
  app.run(main)
