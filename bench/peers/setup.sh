#!/usr/bin/env bash
# Create the peer libraries' virtualenv for bench/bench_peers.py:
#   .alloop/bench-venv with bench/peers/requirements.txt installed.
# Idempotent: skipped when the stamp file holds the requirements' sha256.
# Usage: bash bench/peers/setup.sh   (from any directory)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="${BENCH_VENV:-$root/.alloop/bench-venv}"
req="$root/bench/peers/requirements.txt"
stamp="$venv/.requirements.sha256"
python="${PYTHON:-python3.11}"

want="$(sha256sum "$req" | cut -d' ' -f1)"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "bench venv up to date: $venv"
    exit 0
fi

if [[ ! -x "$venv/bin/python" ]]; then
    echo "creating $venv"
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet -r "$req"
"$venv/bin/python" -c "import small_text, skactiveml, sklearn, numpy; print('small-text', small_text.__version__ if hasattr(small_text, '__version__') else '?', '| scikit-activeml', skactiveml.__version__, '| scikit-learn', sklearn.__version__, '| numpy', numpy.__version__)"
echo "$want" > "$stamp"
echo "bench venv ready: $venv"
