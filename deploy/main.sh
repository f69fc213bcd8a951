#!/usr/bin/env bash
# Sets up (idempotent) and runs the main job: strategy comparison on Rotten Tomatoes with the
# offline MiniLM (embed-lr), results in runs/rotten-tomatoes/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh
VENV="${ALLOOP_VENV:-.venv}"
"$VENV/bin/alloop" data fetch rotten-tomatoes
exec "$VENV/bin/alloop" simulate --dataset rotten-tomatoes \
  --strategy margin --strategy entropy --strategy least-confidence \
  --model embed-lr --initial 50 --step 50 --budget 500 --seeds 3 --out runs/rotten-tomatoes "$@"
