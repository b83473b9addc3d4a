"""Throughput of the JAX step beside its PyTorch twin, with FLOPs and MFU.

  python launch/benchmark.py --model=cla --variant=S/16 --batch=8 --image_size=224 --dtype=float32
"""

from absl import app, flags, logging

from norface_jax.benchmark import run

_MODEL = flags.DEFINE_enum("model", "cla", ["cla", "nor", "mae", "deepfn"], "Which network.")
_VARIANT = flags.DEFINE_string("variant", "S/16", "ViT variant.")
_BATCH = flags.DEFINE_integer("batch", 8, "Global batch.")
_SIZE = flags.DEFINE_integer("image_size", 224, "Image side.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
_DISPATCH = flags.DEFINE_enum("dispatch", "dense", ["dense", "gather"], "MoE dispatch.")
_TORCH = flags.DEFINE_bool("torch", True, "Also time the PyTorch twin.")
_COMPILE = flags.DEFINE_bool("torch_compile", True, "Also time torch.compile.")
_SCAN = flags.DEFINE_bool("scan", False, "nn.scan over the ViT blocks (faster compiles).")
_REMAT = flags.DEFINE_bool("remat", False, "Rematerialise each block in the backward pass.")
_COMPILE_ONLY = flags.DEFINE_bool("compile_only", False, "Only time the train step's compilation.")
_OUT = flags.DEFINE_string("out", "", "Append the table to this markdown file.")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  text = run.run(_MODEL.value, _VARIANT.value, _BATCH.value, _SIZE.value, _DTYPE.value,
                 _DISPATCH.value, _TORCH.value, _COMPILE.value, scan=_SCAN.value,
                 remat=_REMAT.value, compile_only=_COMPILE_ONLY.value)
  print(text)
  if _OUT.value:
    with open(_OUT.value, "a") as f:
      f.write("\n" + text + "\n")


if __name__ == "__main__":
  app.run(main)
