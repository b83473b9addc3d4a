#!/usr/bin/env bash
# Quickstart: create the environment, then run the whole method on SynthFACS (no download):
# perception nets -> MAE -> stage 1 -> normalized dataset -> stage 2 with/without Idn and
# the MoE ablation -> workdirs/pipeline/report.md. Re-running resumes where it stopped.
#   bash launch/quickstart.sh            # the pipeline (configs/synthetic_pipeline.py)
#   bash launch/quickstart.sh stage2     # just the main stage-2 job (FER), about a minute
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup_env.sh
if [[ "${1:-}" == "stage2" ]]; then
  shift
  exec .venv/bin/python launch/train.py \
    --config=configs/affectnet_fer.py:synthetic,runlocal --workdir="${WORKDIR:-workdirs/quickstart}" "$@"
fi
exec .venv/bin/python launch/pipeline.py \
  --config=configs/synthetic_pipeline.py --workdir="${WORKDIR:-workdirs/pipeline}" "$@"
