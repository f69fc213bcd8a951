#!/usr/bin/env bash
# Sets up (idempotent) and runs the whole test suite: lint, unit, PostgreSQL, real-model and
# real-Label-Studio tests. Extra arguments go to pytest (e.g. -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh
VENV="${ALLOOP_VENV:-.venv}"
export ALLOOP_CACHE_DIR="${ALLOOP_CACHE_DIR:-$PWD/.alloop/cache}"
"$VENV/bin/ruff" check loop connectors strategies tests bench
"$VENV/bin/mypy" loop connectors strategies
"$VENV/bin/python" -m pytest -q "$@"
