"""Imports a timm/MAE PyTorch ViT checkpoint as an `init_from` checkpoint for training.

  python launch/import_torch.py --checkpoint=mae_pretrain_vit_base.pth --out=W [--variant=B/16]
  python launch/train.py --config=configs/rafdb_fer.py --config.init_from=W/checkpoints --workdir=...

See docs/interop.md (position embeddings, ignored keys).
"""

from absl import app, flags, logging

from norface_jax.interop import import_timm

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, ".pth/.pt/.safetensors file.")
_OUT = flags.DEFINE_string("out", None, "Output directory (writes OUT/checkpoints).")
_VARIANT = flags.DEFINE_string("variant", "", "ViT variant, e.g. B/16 (default: inferred).")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 0, "Target resolution to validate (optional).")
_SCAN = flags.DEFINE_bool("scan", False, "Stack blocks for a config with model.scan=True.")
flags.mark_flags_as_required(["checkpoint", "out"])


def main(argv):
  del argv
  logging.set_verbosity(logging.INFO)
  sd = import_timm.load_state_dict(_CHECKPOINT.value)
  params, info = import_timm.convert(sd, variant=_VARIANT.value, image_size=_IMAGE_SIZE.value,
                                     scan=_SCAN.value)
  directory = import_timm.write_init_checkpoint(params, _OUT.value, info)
  print(f"imported {info['variant']} -> {directory}")


if __name__ == "__main__":
  app.run(main)
