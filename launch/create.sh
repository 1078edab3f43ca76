#!/usr/bin/env bash
# Create a Cloud TPU VM or pod slice (directly, or as a queued resource; on-demand, spot or reserved) and wait
# until it is ready.
set -euo pipefail
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SETTINGS=(ACCELERATOR_TYPE RUNTIME_VERSION SPOT RESERVED VALID_UNTIL WAIT WAIT_TIMEOUT)

usage() {
  cat <<'EOF_USAGE'
usage: launch/create.sh --tpu-name=NAME --zone=ZONE --accelerator-type=TYPE [options]
  (every --flag-name=VALUE may also be given as the environment variable FLAG_NAME=VALUE)

  --tpu-name          TPU VM / slice name (the queued resource's node id)          [required]
  --zone              e.g. us-east5-a (v5p), us-central2-b (v4)                    [required]
  --accelerator-type  v4-N, v5e-N (= v5litepod-N), v5p-N, v6e-N, e.g. v5p-128      [required]
  --project           GCP project (default: gcloud's configured project)
  --runtime-version   TPU VM image (default by generation: tpu-ubuntu2204-base, v2-alpha-tpuv5-lite,
                      v2-alpha-tpuv5, v2-alpha-tpuv6e)
  --queued=1          request a queued resource (QR_NAME, default NAME-qr) instead of creating the VM directly;
                      the request waits in the queue until capacity is free
  --spot=1            spot capacity (preemptible; use launch/supervise.sh to relaunch and resume)
  --reserved=1        use the project's reservation
  --valid-until=DUR   queued only: give up if not provisioned within DUR (e.g. 24h)
  --wait=0            return right after the request instead of waiting for READY / ACTIVE
  --wait-timeout=S    seconds to wait (default 86400)
  --dry-run=1         print the gcloud commands instead of running them
EOF_USAGE
}

parse_flags "$@"
require TPU_NAME ZONE ACCELERATOR_TYPE
TYPE=$(accelerator_type "$ACCELERATOR_TYPE")
RUNTIME_VERSION=${RUNTIME_VERSION:-$(runtime_version "$TYPE")}

capacity=()
[[ "${SPOT:-0}" == 1 ]] && capacity+=(--spot)
[[ "${RESERVED:-0}" == 1 ]] && capacity+=(--reserved)

if [[ "$QUEUED" == 1 ]]; then
  extra=()
  [[ -n "${VALID_UNTIL:-}" ]] && extra+=(--valid-until-duration="$VALID_UNTIL")
  log "requesting queued resource $QR_NAME (node $TPU_NAME, $TYPE, $RUNTIME_VERSION)"
  tpu queued-resources create "$QR_NAME" --node-id="$TPU_NAME" --accelerator-type="$TYPE" \
    --runtime-version="$RUNTIME_VERSION" "${capacity[@]}" "${extra[@]}"
else
  log "creating TPU VM $TPU_NAME ($TYPE, $RUNTIME_VERSION)"
  tpu tpu-vm create "$TPU_NAME" --accelerator-type="$TYPE" --version="$RUNTIME_VERSION" "${capacity[@]}"
fi

if [[ "${WAIT:-1}" != 1 || "${DRY_RUN:-0}" == 1 ]]; then
  exit 0
fi
deadline=$((SECONDS + ${WAIT_TIMEOUT:-86400}))
while ((SECONDS < deadline)); do
  if [[ "$QUEUED" == 1 ]]; then
    state=$(qr_state)
    case "$state" in
      ACTIVE) break ;;
      FAILED | SUSPENDED | NOT_FOUND) die "queued resource $QR_NAME is $state" ;;
    esac
  else
    state=$(tpu_state)
    case "$state" in
      READY) break ;;
      PREEMPTED | TERMINATED | NOT_FOUND) die "TPU $TPU_NAME is $state" ;;
    esac
  fi
  log "waiting: $state"
  sleep "${POLL_SECONDS:-30}"
done
((SECONDS < deadline)) || die "timed out waiting for $TPU_NAME"
log "$TPU_NAME is ready"
