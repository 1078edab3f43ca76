#!/usr/bin/env bash
# Keep a SPaR run going on preemptible capacity: create the TPU (queued resource by default), install, fetch the
# model, run; poll; when the TPU is preempted (or the job fails), recreate / rerun. Every rerun resumes from the
# workdir on GCS, so only the work since the last finished shard or checkpoint is repeated.
set -euo pipefail
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SETTINGS=(ACCELERATOR_TYPE RUNTIME_VERSION SPOT RESERVED VALID_UNTIL CONFIG WORKDIR ARGS BUCKETS MODEL_SRC MODEL_DIR
  PYTHON_VERSION JAX_SPEC POLL_SECONDS MAX_RESTARTS MAX_FAILURES DELETE_WHEN_DONE WAIT_TIMEOUT)

usage() {
  cat <<'EOF_USAGE'
usage: launch/supervise.sh --tpu-name=NAME --zone=ZONE --accelerator-type=TYPE --config=configs/NAME.py \
                           --workdir=gs://BUCKET/PATH [options]
  (every --flag-name=VALUE may also be given as the environment variable FLAG_NAME=VALUE)

  Creates the slice (as a queued resource unless --queued=0; add --spot=1 for spot capacity), installs the
  package, fetches the model (--model-src), runs the config, and watches it every --poll-seconds:
    TPU preempted / suspended / gone  ->  delete, recreate, reinstall, rerun (resumes from the workdir)
    job failed on a worker            ->  stop it on every worker and rerun (at most --max-failures times in a row)
    job done on every worker          ->  delete the TPU (unless --delete-when-done=0) and exit 0

  --workdir            gs://BUCKET/PATH: required, so that a new VM finds the previous progress  [required]
  --model-src          gs://... or hf:ORG/NAME, fetched after every (re)creation (see fetch_model.sh)
  --args, --buckets    as for run.sh / install.sh
  --poll-seconds       default 60;  --max-restarts (recreations, default 50);  --max-failures (default 3)
  other flags (--spot, --reserved, --valid-until, --runtime-version, --project, --dry-run) as for create.sh
EOF_USAGE
}

QUEUED=${QUEUED:-1}
parse_flags "$@"
[[ "${DRY_RUN:-0}" != 1 ]] || die "supervise.sh has no dry run (it polls real state); dry-run the single scripts"
require TPU_NAME ZONE ACCELERATOR_TYPE CONFIG WORKDIR
[[ "$WORKDIR" == gs://* ]] || die "WORKDIR must be gs://BUCKET/PATH so that a recreated TPU can resume, got '$WORKDIR'"
export TPU_NAME ZONE QUEUED QR_NAME ACCELERATOR_TYPE CONFIG WORKDIR
BUCKETS="$(bucket_of "$WORKDIR") ${BUCKETS:-}"
export BUCKETS
POLL=${POLL_SECONDS:-60}

healthy() {  # is the TPU (and its queued resource) up?
  if [[ "$QUEUED" == 1 ]]; then
    [[ "$(qr_state)" == ACTIVE ]] || return 1
  fi
  [[ "$(tpu_state)" == READY ]]
}

recreate() {  # (called in a condition, where `set -e` is off: every step checks its own status)
  if [[ "$QUEUED" == 1 && "$(qr_state)" != NOT_FOUND ]] || [[ "$QUEUED" != 1 && "$(tpu_state)" != NOT_FOUND ]]; then
    "$LAUNCH_DIR/delete.sh" || return 1
  fi
  "$LAUNCH_DIR/create.sh" || return 1
  "$LAUNCH_DIR/install.sh" || return 1
  if [[ -n "${MODEL_SRC:-}" ]]; then
    "$LAUNCH_DIR/fetch_model.sh" || return 1
  fi
}

restarts=0
failures=0
need_vm=1
start=1
if healthy; then
  log "$TPU_NAME is already up: reinstalling and resuming"
  "$LAUNCH_DIR/install.sh"
  if [[ -n "${MODEL_SRC:-}" ]]; then
    "$LAUNCH_DIR/fetch_model.sh"
  fi
  need_vm=0
  if [[ "$(job_state)" == running ]]; then
    log "a job is running on $TPU_NAME: watching it"
    start=0
  fi
fi
while :; do
  if ((need_vm)); then
    ((restarts <= ${MAX_RESTARTS:-50})) || die "gave up after $restarts recreations"
    log "creating $TPU_NAME (recreation $restarts)"
    if ! recreate; then
      restarts=$((restarts + 1))
      log "could not bring $TPU_NAME up; retrying in $POLL s"
      sleep "$POLL"
      continue
    fi
    need_vm=0
  fi
  if ((start)); then
    "$LAUNCH_DIR/run.sh"
  fi
  start=1
  while :; do
    sleep "$POLL"
    if ! healthy; then
      log "$TPU_NAME is no longer up (preempted?): recreating and resuming"
      restarts=$((restarts + 1))
      need_vm=1
      break
    fi
    state=$(job_state)
    case "$state" in
      running | unknown) failures=0 ;;
      done)
        log "job finished on every worker; results in $WORKDIR"
        if [[ "${DELETE_WHEN_DONE:-1}" == 1 ]]; then
          "$LAUNCH_DIR/delete.sh"
        fi
        exit 0
        ;;
      failed | idle)
        failures=$((failures + 1))
        log "job $state ($failures in a row)"
        ((failures <= ${MAX_FAILURES:-3})) || die "job failed $failures times in a row; see launch/logs.sh"
        "$LAUNCH_DIR/stop.sh"
        break
        ;;
    esac
  done
done
