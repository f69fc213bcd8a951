#!/usr/bin/env bash
# Sets up (idempotent) and compares margin, entropy and least-confidence sampling against random
# on Rotten Tomatoes and BBC News (embed-lr, 3 seeds, 50 -> 500 labels); results in runs/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh
VENV="${ALLOOP_VENV:-.venv}"
for d in rotten-tomatoes bbc-news; do
  "$VENV/bin/alloop" simulate --dataset "$d" \
    --strategy margin --strategy entropy --strategy least-confidence \
    --model embed-lr --initial 50 --step 50 --budget 500 --seeds 3 --out "runs/$d" "$@"
done
