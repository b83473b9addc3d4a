#!/usr/bin/env bash
# The accelerator numbers in one command: stage 2, stage 1, MAE and DeepFN steps beside
# their PyTorch twins, MFU, the input pipeline and the largest batch, as one markdown
# table (norface_jax/benchmark/suite.py). On one GPU it stays within an 8-minute budget.
#
#   bash launch/accelerator_check.sh                 # full size, bfloat16; writes accelerator_check.md
#   bash launch/accelerator_check.sh --tiny          # test sizes on a CPU (the suite runs this)
#   bash launch/accelerator_check.sh --out=FILE --budget_s=300 --workers=1,4
#
# Python: $PYTHON if set, else this checkout's .venv (bash launch/setup_env.sh), else
# python3. On a GPU machine use a Python whose JAX sees the GPU (a jax[cuda] install) and
# that has this project's requirements (pip install -e .); the PyTorch rows need a CUDA
# build of torch there, and are skipped, with the reason in the table, without one.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-}
if [ -z "$py" ]; then
  if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi
out=accelerator_check.md
args=()
for a in "$@"; do
  case "$a" in
    --out=*) out=${a#--out=} ;;
    *) args+=("$a") ;;
  esac
done
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
: > "$out"
exec "$py" launch/benchmark.py --suite --out="$out" ${args[@]+"${args[@]}"}
