"""Exports a trained workdir to PyTorch (safetensors + .pt state_dict + architecture JSON).

  python launch/export_torch.py --workdir=W --out=DIR [--step=N] [--checkpoint=best|latest]
  python launch/export_torch.py --deepfn=W/params/NAME.msgpack --out=DIR   # DeepFN AE / LeNet-5

Load it with `norface_jax.torch_twins` (plain PyTorch; see docs/interop.md).
"""

from absl import app, flags

from norface_jax import console
from norface_jax.interop import export

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir (config.json + checkpoints).")
_OUT = flags.DEFINE_string("out", None, "Output directory.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_WHICH = flags.DEFINE_enum("checkpoint", "latest", ["best", "latest"],
                           "Without --step: the latest or the best checkpoint.")
_VERIFY = flags.DEFINE_bool("verify", True, "Compare the twin with the Flax model.")
_DEEPFN = flags.DEFINE_string("deepfn", None, "Instead of --workdir: a DeepFN network saved "
                              "by the protocol runner (save=...), W/params/NAME.msgpack.")
flags.mark_flags_as_required(["out"])


def main(argv):
  del argv
  console.setup()
  if (_WORKDIR.value is None) == (_DEEPFN.value is None):
    raise app.UsageError("give exactly one of --workdir and --deepfn")
  if _DEEPFN.value:
    arch = export.export_deepfn(_DEEPFN.value, _OUT.value, verify=_VERIFY.value)
    print(f"exported {arch['network']} to {_OUT.value}; parity {arch.get('parity')}")
    return
  arch = export.export_workdir(_WORKDIR.value, _OUT.value, step=_STEP.value,
                               which=_WHICH.value, verify=_VERIFY.value)
  print(f"exported {arch['network']} step {arch['step']} to {_OUT.value}; "
        f"parity {arch.get('parity')}")


if __name__ == "__main__":
  app.run(main)
