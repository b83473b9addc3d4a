#!/usr/bin/env bash
# Quickstart: create the environment, then run the main job on SynthFACS (no download).
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup_env.sh
exec .venv/bin/python launch/train.py \
  --config=configs/affectnet_fer.py:synthetic,runlocal --workdir="${WORKDIR:-workdirs/quickstart}" "$@"
