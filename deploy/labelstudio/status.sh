#!/usr/bin/env bash
# Print whether the local Label Studio runs and answers (exit 0 when healthy, 3 when not).
# Extra options are passed on, e.g. --port 8081 (see: status.sh --help).
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
ls_server status "$@"
