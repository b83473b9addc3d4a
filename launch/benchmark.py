"""Throughput of the JAX step beside its PyTorch twin, with FLOPs and MFU.

  python launch/benchmark.py --model=cla --variant=S/16 --batch=8 --image_size=224 --dtype=float32
  python launch/benchmark.py --model=nor --variant=mu/8 --image_size=64 --batch=16
  python launch/benchmark.py --model=mae --variant=S/16 --image_size=224 --batch=8
  python launch/benchmark.py --model=deepfn
  python launch/benchmark.py --suite [--tiny] --out=check.md   # = launch/accelerator_check.sh

--model: cla (stage 2, F_cla), nor (stage 1: the G + D step of F_nor with its perception
losses), mae (MAE pre-training), deepfn (DeepFN autoencoder and LeNet-5). --variant is
a ViT variant for cla / nor / mae and `runlocal`, `paper` or `W1,W2,W3,W4` (AE widths) for
deepfn. Sizes left out take the model's defaults (norface_jax/benchmark/<model>.py
`DEFAULTS`). PyTorch uses OMP_NUM_THREADS threads (else every CPU this process may use).

--suite runs the accelerator check instead (norface_jax/benchmark/suite.py): every model
at full size in bfloat16, the input pipeline and the largest batch, one markdown table,
within --budget_s; --tiny runs it at test sizes on a CPU.
"""

from absl import app, flags, logging

from norface_jax.benchmark import common, run, suite

_MODEL = flags.DEFINE_enum("model", "cla", list(run.MODELS), "Which network.")
_VARIANT = flags.DEFINE_string("variant", None, "ViT variant (deepfn: runlocal|paper|widths).")
_BATCH = flags.DEFINE_integer("batch", None, "Global batch.")
_SIZE = flags.DEFINE_integer("image_size", None, "Image side.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
_DISPATCH = flags.DEFINE_enum("dispatch", "dense", ["dense", "gather"], "MoE dispatch (cla).")
_PERCEPTION = flags.DEFINE_enum(
    "perception", "synthfacs", ["synthfacs", "synthfacs_conv", "tiny"],
    "nor: sizes of the (randomly initialised) perception nets in the step: those of "
    "configs/perception_synthfacs.py (with exp_arch=conv), or the smoke-test ones of "
    "perception_dir='random'.")
_TORCH = flags.DEFINE_bool("torch", True, "Also time the PyTorch twin.")
_COMPILE = flags.DEFINE_bool("torch_compile", True, "Also time torch.compile.")
_SCAN = flags.DEFINE_bool("scan", False, "nn.scan over the ViT blocks (faster compiles).")
_REMAT = flags.DEFINE_bool("remat", False, "Rematerialise each block in the backward pass.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps before timing.")
_WINDOWS = flags.DEFINE_integer("windows", 5, "Timed windows (the median is reported).")
_STEPS = flags.DEFINE_integer("steps_per_window", 2, "Steps per timed window.")
_COMPILE_ONLY = flags.DEFINE_bool("compile_only", False, "Only time the train step's compilation.")
_OUT = flags.DEFINE_string("out", "", "Append the table to this markdown file.")
_SUITE = flags.DEFINE_bool("suite", False, "Run the accelerator check (every model).")
_TINY = flags.DEFINE_bool("tiny", False, "--suite at test sizes (a CPU, minutes).")
_BUDGET = flags.DEFINE_float("budget_s", None, "--suite: skip what is left after this long.")
_WORKERS = flags.DEFINE_list("workers", None, "--suite: Grain worker counts to time.")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  if _SUITE.value:
    settings = suite.Settings.make(
        _TINY.value, budget_s=_BUDGET.value, torch_side=_TORCH.value,
        torch_compile=None if _COMPILE.present == 0 else _COMPILE.value,
        dtype=None if _DTYPE.present == 0 else _DTYPE.value,
        workers=None if _WORKERS.value is None else tuple(int(w) for w in _WORKERS.value))
    return _emit(suite.run_suite(settings))
  defaults = run.model_module(_MODEL.value).DEFAULTS
  pick = lambda flag, key: defaults[key] if flag.value is None else flag.value  # noqa: E731
  opts = common.Options(
      variant=pick(_VARIANT, "variant"), batch=pick(_BATCH, "batch"),
      image_size=pick(_SIZE, "image_size"), dtype=_DTYPE.value, dispatch=_DISPATCH.value,
      scan=_SCAN.value, remat=_REMAT.value, perception=_PERCEPTION.value, warmup=_WARMUP.value,
      windows=_WINDOWS.value, steps_per_window=_STEPS.value)
  _emit(run.run(_MODEL.value, opts, _TORCH.value, _COMPILE.value,
                compile_only=_COMPILE_ONLY.value))


def _emit(text: str) -> None:
  print(text)
  if _OUT.value:
    with open(_OUT.value, "a") as f:
      f.write("\n" + text + "\n")


if __name__ == "__main__":
  app.run(main)
