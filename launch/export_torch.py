"""Exports a trained workdir to PyTorch (safetensors + .pt state_dict + architecture JSON).

  python launch/export_torch.py --workdir=W --out=DIR [--step=N] [--checkpoint=best|latest]

Load it with `norface_jax.torch_twins` (plain PyTorch; see docs/interop.md).
"""

from absl import app, flags, logging

from norface_jax.interop import export

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir (config.json + checkpoints).")
_OUT = flags.DEFINE_string("out", None, "Output directory.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_WHICH = flags.DEFINE_enum("checkpoint", "latest", ["best", "latest"],
                           "Without --step: the latest or the best checkpoint.")
_VERIFY = flags.DEFINE_bool("verify", True, "Compare the twin with the Flax model.")
flags.mark_flags_as_required(["workdir", "out"])


def main(argv):
  del argv
  logging.set_verbosity(logging.INFO)
  arch = export.export_workdir(_WORKDIR.value, _OUT.value, step=_STEP.value,
                               which=_WHICH.value, verify=_VERIFY.value)
  print(f"exported {arch['network']} step {arch['step']} to {_OUT.value}; "
        f"parity {arch.get('parity')}")


if __name__ == "__main__":
  app.run(main)
