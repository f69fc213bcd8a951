#!/usr/bin/env bash
# Sets up (idempotent) and measures the data techniques (augmentation, ensembles, input template)
# against the default on Rotten Tomatoes and BBC News: `alloop simulate`, embed-lr, random
# selection, 50 -> 500 labels, SEEDS seeds (default 3); results in runs/techniques/, then the
# README table (bench/technique_table.py). Also the label-noise table (bench/label_noise.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh
VENV="${ALLOOP_VENV:-.venv}"
OUT=runs/techniques
mkdir -p "$OUT/config"
conf() { printf '%b' "$2" > "$OUT/config/$1.toml"; }
conf none 'seed = 0\n'
for t in synonym insert swap delete; do conf "$t" "[augment]\ntechniques = [\"$t\"]\n"; done
conf all '[augment]\ntechniques = ["synonym", "insert", "swap", "delete"]\n'
conf bagging '[ensemble]\nkind = "bagging"\nmembers = 5\n'
conf stacking '[ensemble]\nkind = "stacking"\n'
conf template-rotten-tomatoes '[input]\ntemplate = "Movie review: {text}"\n'
conf template-bbc-news '[input]\ntemplate = "News article: {text}"\n'
for d in ${DATASETS:-rotten-tomatoes bbc-news}; do
  for c in none synonym insert swap delete all bagging stacking template; do
    f="$OUT/config/$c.toml"; [ "$c" = template ] && f="$OUT/config/template-$d.toml"
    "$VENV/bin/alloop" simulate --dataset "$d" --strategy random --model embed-lr \
      --seeds "${SEEDS:-3}" --no-full-reference --config "$f" --out "$OUT/$d-$c" "$@"
  done
done
"$VENV/bin/python" bench/technique_table.py "$OUT"
"$VENV/bin/python" bench/label_noise.py --json "$OUT/label_noise.json"
