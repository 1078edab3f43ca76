#!/usr/bin/env bash
# Stop the job on every worker (its whole process group); optionally stop the VM too.
set -euo pipefail
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SETTINGS=(VM)

usage() {
  cat <<'EOF_USAGE'
usage: launch/stop.sh --tpu-name=NAME --zone=ZONE [--vm=1]
  stops the job started by launch/run.sh on every worker; --vm=1 also stops the TPU VM
  (`gcloud compute tpus tpu-vm stop`; single-host VMs only - delete pod slices with launch/delete.sh)
EOF_USAGE
}

parse_flags "$@"
require TPU_NAME ZONE
remote all stop
if [[ "${VM:-0}" == 1 ]]; then
  log "stopping TPU VM $TPU_NAME"
  tpu tpu-vm stop "$TPU_NAME"
fi
