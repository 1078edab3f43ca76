#!/usr/bin/env bash
# Show the state of the TPU (and its queued resource) and of the job on every worker.
set -euo pipefail
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SETTINGS=()

usage() {
  cat <<'EOF_USAGE'
usage: launch/status.sh --tpu-name=NAME --zone=ZONE [--queued=1]
  prints the queued resource state (with --queued=1), the TPU state, and each worker's job state
  ("worker=N running PID", "worker=N exited CODE", "worker=N idle")
EOF_USAGE
}

parse_flags "$@"
require TPU_NAME ZONE
if [[ "$QUEUED" == 1 ]]; then
  echo "queued resource $QR_NAME: $(qr_state)"
fi
state=$(tpu_state)
echo "tpu $TPU_NAME: $state"
if [[ "$state" == READY ]]; then
  remote all status
fi
