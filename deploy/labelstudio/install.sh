#!/usr/bin/env bash
# Install Label Studio 1.23.2 into its own virtualenv (default .alloop/labelstudio/venv; ~85 s, ~1 GB). Idempotent.
# Extra options are passed on, e.g. --port 8081 (see: install.sh --help).
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
ls_server install "$@"
