#!/usr/bin/env bash
# Stop the local Label Studio started by start.sh (from any shell).
# Extra options are passed on, e.g. --port 8081 (see: stop.sh --help).
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
ls_server stop "$@"
