#!/usr/bin/env bash
# Sets up (idempotent) and compares every selection strategy against random on the built-in
# datasets (embed-lr, 50 -> 500 labels in steps of 50; SEEDS seeds, default 5); results in
# runs/<dataset>/. DATASETS picks the datasets (default: all four); extra arguments go to
# `alloop simulate`. kl-consensus is left out: it equals bald (the same numbers, tested).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh
VENV="${ALLOOP_VENV:-.venv}"
STRATS=(margin entropy least-confidence density-margin power-margin cluster-margin badge coreset
  class-balanced-margin balanced-cluster-margin bald vote-entropy contrastive)
args=()
for s in "${STRATS[@]}"; do args+=(--strategy "$s"); done
for d in ${DATASETS:-sms-spam reuters-r52 bbc-news rotten-tomatoes}; do
  "$VENV/bin/alloop" simulate --dataset "$d" "${args[@]}" \
    --model embed-lr --initial 50 --step 50 --budget 500 --seeds "${SEEDS:-5}" --out "runs/$d" "$@"
done
