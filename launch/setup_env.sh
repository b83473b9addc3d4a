#!/usr/bin/env bash
# Creates ./.venv with the project and its dev extras (idempotent, a few seconds with uv).
# torch is pinned to 2.13.0; where a local CPU wheel directory exists (/opt/wheels, or
# $NORFACE_WHEELS) it is used, so no CUDA build is ever pulled.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! command -v uv >/dev/null 2>&1; then
  "$PY" -m pip install -q uv
fi
UV=$(command -v uv || echo "$PY -m uv")
if [ ! -x .venv/bin/python ]; then
  $UV venv -q -p "$PY" .venv
fi
links=()
for d in "${NORFACE_WHEELS:-}" /opt/wheels; do
  if [ -n "$d" ] && [ -d "$d" ]; then links+=(--find-links "$d"); fi
done
# --compile-bytecode: every Python process (tests start dozens) then loads .pyc files
# instead of compiling jax, flax and torch from source (about 5 s each where
# PYTHONDONTWRITEBYTECODE is set).
VIRTUAL_ENV=.venv $UV pip install -q --compile-bytecode "${links[@]}" -e ".[dev]"
# MTCNN weights (detection/): --no-deps, its pins (torch<2.3, numpy<2, torchvision) clash.
VIRTUAL_ENV=.venv $UV pip install -q --no-deps facenet-pytorch==2.6.0
