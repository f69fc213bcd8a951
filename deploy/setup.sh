#!/usr/bin/env bash
# Idempotent set-up: a virtual environment with torch 2.13.0 (CPU) installed first and pinned,
# then the project and its test tools. A second run with unchanged pyproject.toml does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${ALLOOP_VENV:-.venv}"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PY="$cand"; break
    fi
  done
fi
if [ -z "$PY" ]; then
  echo "error: Python 3.11 is required (found: $(python3 --version 2>&1 || echo none)). Install it or set PYTHON=/path/to/python3.11." >&2
  exit 2
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PY" -m venv "$VENV"
fi

stamp="$VENV/.alloop-setup"
want="$(cat pyproject.toml deploy/constraints.txt | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing torch 2.13.0 (CPU) first, then the project (a few minutes the first time)"
  # Here a local CPU wheel of torch 2.13.0 is found by pip; elsewhere point ALLOOP_TORCH_INDEX_URL at
  # https://download.pytorch.org/whl/cpu to get the CPU build instead of the CUDA one.
  "$VENV/bin/pip" install -q --disable-pip-version-check -c deploy/constraints.txt \
    ${ALLOOP_TORCH_INDEX_URL:+--index-url "$ALLOOP_TORCH_INDEX_URL"} "torch==2.13.0"
  "$VENV/bin/pip" install -q --disable-pip-version-check -c deploy/constraints.txt -e ".[test]"
  "$VENV/bin/pip" check
  echo "$want" > "$stamp"
else
  echo "setup: $VENV is up to date"
fi

# The browser tests and `alloop screenshot` drive the system's Chromium (Debian's package; no
# browser build is downloaded). Installed here when missing and we may (root with apt-get).
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing Debian's chromium for the browser tests (once)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
  else
    echo "setup: no chromium: install it (apt-get install chromium) for the browser tests and screenshots" >&2
  fi
fi
