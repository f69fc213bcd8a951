#!/usr/bin/env bash
# Sets up (idempotent) and compares every selection strategy against random on Rotten Tomatoes
# and BBC News (embed-lr, 50 -> 500 labels in steps of 50; SEEDS seeds, default 3); results in
# runs/<dataset>/. Extra arguments go to `alloop simulate`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh
VENV="${ALLOOP_VENV:-.venv}"
STRATS=(margin entropy least-confidence density-margin power-margin cluster-margin badge coreset
  class-balanced-margin bald vote-entropy)
args=()
for s in "${STRATS[@]}"; do args+=(--strategy "$s"); done
for d in rotten-tomatoes bbc-news; do
  "$VENV/bin/alloop" simulate --dataset "$d" "${args[@]}" \
    --model embed-lr --initial 50 --step 50 --budget 500 --seeds "${SEEDS:-3}" --out "runs/$d" "$@"
done
