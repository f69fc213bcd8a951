#!/usr/bin/env bash
# Sets up (idempotent) and runs the main job: `alloop serve`, the loop as a service, on Rotten
# Tomatoes with a local Label Studio (installed into .alloop/labelstudio/venv on first use),
# state in SQLite (.alloop/alloop.db), the offline MiniLM (embed-lr). Ctrl-C stops cleanly; a
# rerun resumes. Extra arguments go to `alloop serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh
VENV="${ALLOOP_VENV:-.venv}"
export ALLOOP_EVAL_SAMPLE_SIZE="${ALLOOP_EVAL_SAMPLE_SIZE:-50}"
exec "$VENV/bin/alloop" serve --dataset rotten-tomatoes "$@"
