#!/usr/bin/env bash
# Runs the test suite (creating the environment if needed). Extra args go to pytest.
# Tests run in NORFACE_TEST_WORKERS pytest-xdist processes (default 2, the CI machine's
# cores; 0 = in this process), one test file per worker at a time (--dist loadfile).
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup_env.sh
# The project's own modules get .pyc files too (the environment may forbid writing them).
unset PYTHONDONTWRITEBYTECODE
workers=${NORFACE_TEST_WORKERS:-2}
par=()
# --no-loadscope-reorder: keep conftest's longest-first file order (xdist would otherwise
# order files by their number of tests).
if [ "$workers" != "0" ]; then par=(-n "$workers" --dist loadfile --no-loadscope-reorder); fi
exec .venv/bin/python -m pytest -q --durations=15 ${par[@]+"${par[@]}"} "$@"
