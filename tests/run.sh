#!/usr/bin/env bash
# Runs the test suite (creating the environment if needed). Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup_env.sh
exec .venv/bin/python -m pytest -q --durations=15 "$@"
