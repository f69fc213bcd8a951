# Shared by install.sh / start.sh / stop.sh / status.sh: run from the repository root with the
# project's Python. Override with ALLOOP_PYTHON; ALLOOP_HOME, ALLOOP_LS_VENV, ALLOOP_LS_DATA,
# ALLOOP_LS_PORT, ALLOOP_LS_HOST, ALLOOP_LS_USERNAME and ALLOOP_LS_TEMPLATE pick the paths.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
if [[ -n "${ALLOOP_PYTHON:-}" ]]; then
    PY="$ALLOOP_PYTHON"
elif [[ -x .venv/bin/python ]]; then
    PY=.venv/bin/python
else
    PY=python3
fi
ls_server() { exec "$PY" -m connectors.labelstudio.server "$@"; }
