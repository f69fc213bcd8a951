#!/usr/bin/env bash
# Start the local Label Studio on 127.0.0.1 (default port 8080) and wait until it answers; prints the URL, the username and where the password and API token are. Idempotent: a running server is reused.
# Extra options are passed on, e.g. --port 8081 (see: start.sh --help).
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
ls_server start "$@"
