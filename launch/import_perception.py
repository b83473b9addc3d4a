"""Builds a stage-1 perception_dir from the public PyTorch weights of the loss networks.

  python launch/import_perception.py --vgg=vgg19.pth --arcface=ms1mv3_arcface_r50.pth \
      --landmarks=2DFAN4-cd938726ad.pth.tar --expression=resnet_embedding.pt \
      --eyebrow=deca_model.tar --flame=generic_model.pkl \
      --flame_landmarks=landmark_embedding.npy --out=P
  python launch/train.py --config=configs/stage1_bp4d.py:perception_dir=P --workdir=...

--vgg: torchvision VGG (features.N.*); --arcface: insightface iresnet; --landmarks:
face-alignment 2D-FAN; --expression: a torchvision ResNet whose `fc` is the embedding
head (FECNet's own Inception-ResNet layout is not covered); --eyebrow: DECA's
deca_model.tar (its `E_flame`). Files: .pth/.pt/.tar (torch.load, weights only) or
.safetensors. See docs/stage1.md, "Perception networks".
"""

from absl import app, flags

from norface_jax import console
from norface_jax.interop import perception_import

_PATHS = {
    "vgg": flags.DEFINE_string("vgg", None, "torchvision VGG19 weights (L_perc)."),
    "identity": flags.DEFINE_string("arcface", None, "insightface ArcFace iresnet50 (L_id)."),
    "landmarks": flags.DEFINE_string("landmarks", None, "face-alignment 2DFAN-4 (L_lm)."),
    "expression": flags.DEFINE_string("expression", None,
                                      "torchvision ResNet + Linear embedding `fc` (L_exp)."),
    "eyebrow": flags.DEFINE_string("eyebrow", None, "DECA deca_model.tar / E_flame (L_eye)."),
}
_OUT = flags.DEFINE_string("out", None, "The perception_dir to write (must hold no checkpoints).")
_EYEBROW_CHANNELS = flags.DEFINE_list(
    "eyebrow_channels", None, "FLAME expression indices (0..49) L_eye compares, or 'all'; "
    "default: the channels that move the eyebrows, read off --flame.")
_FLAME = flags.DEFINE_string("flame", None, "DECA's data/generic_model.pkl (FLAME 2020).")
_FLAME_LANDMARKS = flags.DEFINE_string("flame_landmarks", None,
                                       "DECA's data/landmark_embedding.npy.")
_COVERAGE = flags.DEFINE_float("eyebrow_coverage", 0.9, "Share of FLAME's brow movement the "
                               "chosen channels carry (interop/flame.py).")
_TEMPERATURE = flags.DEFINE_float("landmark_temperature", 0.05,
                                  "Soft-argmax temperature on FAN's heatmaps (fan.soft_argmax).")
_EXP_NORMALIZE = flags.DEFINE_enum("expression_normalize", "imagenet", ["imagenet", "none"],
                                   "Input normalisation the expression ResNet was trained with.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 256, "Stage 1's image side (recorded).")
flags.mark_flags_as_required(["vgg", "arcface", "landmarks", "expression", "eyebrow", "out"])


def main(argv):
  del argv
  console.setup()
  channels = _EYEBROW_CHANNELS.value
  if channels is not None:
    channels = "all" if channels == ["all"] else [int(c) for c in channels]
  out = perception_import.import_to_dir(
      {name: flag.value for name, flag in _PATHS.items()}, _OUT.value,
      image_size=_IMAGE_SIZE.value, eyebrow_channels=channels, flame=_FLAME.value,
      flame_landmarks=_FLAME_LANDMARKS.value, eyebrow_coverage=_COVERAGE.value,
      landmark_temperature=_TEMPERATURE.value, expression_normalize=_EXP_NORMALIZE.value)
  print(f"wrote {out}; use it with --config.perception_dir={out}")


if __name__ == "__main__":
  app.run(main)
