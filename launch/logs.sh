#!/usr/bin/env bash
# Stream (or print) the job log of one worker.
set -euo pipefail
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SETTINGS=(WORKER FOLLOW LINES)

usage() {
  cat <<'EOF_USAGE'
usage: launch/logs.sh --tpu-name=NAME --zone=ZONE [--worker=0] [--follow=0] [--lines=100]
  (every --flag-name=VALUE may also be given as the environment variable FLAG_NAME=VALUE)

  --worker    worker index (default 0: process 0 writes the shared artifacts and reports), or all
  --follow=0  print the last lines and exit instead of following the log
  --lines     how many past lines to show (default 100)
EOF_USAGE
}

parse_flags "$@"
require TPU_NAME ZONE
remote "${WORKER:-0}" tail SPAR_FOLLOW="${FOLLOW:-1}" SPAR_LINES="${LINES:-100}"
