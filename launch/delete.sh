#!/usr/bin/env bash
# Delete the TPU VM / slice, or its queued resource (with its node). The GCS workdir is kept.
set -euo pipefail
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SETTINGS=()

usage() {
  cat <<'EOF_USAGE'
usage: launch/delete.sh --tpu-name=NAME --zone=ZONE [--queued=1 [--qr-name=NAME-qr]]
  deletes the TPU VM, or with --queued=1 the queued resource and its node (--force); no prompt
EOF_USAGE
}

parse_flags "$@"
require TPU_NAME ZONE
if [[ "$QUEUED" == 1 ]]; then
  log "deleting queued resource $QR_NAME and its node"
  tpu queued-resources delete "$QR_NAME" --force --quiet
else
  log "deleting TPU VM $TPU_NAME"
  tpu tpu-vm delete "$TPU_NAME" --quiet
fi
