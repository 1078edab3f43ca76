# shellcheck shell=bash
# Shared settings and helpers of the launch scripts (sourced by them; not run directly).
#
# Every setting is an environment variable (TPU_NAME=...) or the same name as a flag (--tpu-name=...); flags win.
# DRY_RUN=1 prints each gcloud command instead of running it.

LAUNCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck disable=SC2034  # used by the scripts that source this file
REPO_DIR=$(cd "$LAUNCH_DIR/.." && pwd)

# Settings every script understands; scripts add their own to SETTINGS before calling parse_flags.
COMMON_SETTINGS=(TPU_NAME ZONE PROJECT QUEUED QR_NAME DRY_RUN REMOTE_DIR VENV LOG_DIR MOUNT_ROOT)

die() {
  echo "error: $*" >&2
  exit 2
}

log() {
  echo "[$(date -u +%H:%M:%S)] $*" >&2
}

# parse_flags "$@": --name=value (or --name for 1) sets NAME; -h/--help runs usage(). Unknown flags are errors.
parse_flags() {
  local arg name value var known setting
  for arg in "$@"; do
    case "$arg" in
      -h | --help) usage; exit 0 ;;
      --*=*) name=${arg%%=*}; name=${name#--}; value=${arg#*=} ;;
      --*) name=${arg#--}; value=1 ;;
      *) die "unexpected argument '$arg': settings are --name=value flags or NAME=value variables (see --help)" ;;
    esac
    var=$(tr 'a-z-' 'A-Z_' <<<"$name")
    known=0
    for setting in "${COMMON_SETTINGS[@]}" "${SETTINGS[@]}"; do
      [[ "$setting" == "$var" ]] && known=1
    done
    ((known)) || die "unknown flag --$name (see --help)"
    printf -v "$var" '%s' "$value"
    export "${var?}"
  done
  QUEUED=${QUEUED:-0}
  QR_NAME=${QR_NAME:-${TPU_NAME:-}-qr}
  REMOTE_DIR=${REMOTE_DIR:-spar_jax}
  VENV=${VENV:-spar_venv}
  LOG_DIR=${LOG_DIR:-spar_logs}
  MOUNT_ROOT=${MOUNT_ROOT:-/gcs}
}

# require NAME...: fail with a message naming the flag and the variable of each unset setting.
require() {
  local var flag
  for var in "$@"; do
    if [[ -z "${!var:-}" ]]; then
      flag=$(tr 'A-Z_' 'a-z-' <<<"$var")
      die "$var is not set: pass --$flag=... or export $var=... (see --help)"
    fi
  done
}

# run CMD...: run a command, or print it (shell-quoted, prefixed with "+") when DRY_RUN=1.
run() {
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    printf '+'
    printf ' %q' "$@"
    printf '\n'
    return 0
  fi
  "$@"
}

location_flags() {
  LOCATION=(--zone="$ZONE")
  if [[ -n "${PROJECT:-}" ]]; then
    LOCATION+=(--project="$PROJECT")
  fi
}

# tpu ARGS...: gcloud compute tpus ARGS --zone=... [--project=...]
tpu() {
  location_flags
  run gcloud compute tpus "$@" "${LOCATION[@]}"
}

# remote WORKER COMMAND [ENV=VALUE...]: run `bash ~/REMOTE_DIR/launch/remote.sh COMMAND` on a worker ("all" for
# every worker) with the layout settings and the given SPAR_* variables.
remote() {
  local worker=$1 command=$2 env="" pair
  shift 2
  for pair in SPAR_REMOTE_DIR="$REMOTE_DIR" SPAR_VENV="$VENV" SPAR_LOG_DIR="$LOG_DIR" \
    SPAR_MOUNT_ROOT="$MOUNT_ROOT" "$@"; do
    env+=" $(printf '%q' "$pair")"
  done
  tpu tpu-vm ssh "$TPU_NAME" --worker="$worker" \
    --command="env$env bash \"\$HOME\"/$(printf '%q' "$REMOTE_DIR")/launch/remote.sh $command"
}

# accelerator_type TYPE: gcloud's name (v5e-N -> v5litepod-N); runtime_version TYPE: the default TPU VM image.
accelerator_type() {
  case "$1" in
    v5e-*) echo "v5litepod-${1#v5e-}" ;;
    v4-* | v5litepod-* | v5p-* | v6e-*) echo "$1" ;;
    *) die "ACCELERATOR_TYPE '$1' is not one of v4-N, v5e-N (v5litepod-N), v5p-N, v6e-N" ;;
  esac
}

runtime_version() {
  case "$1" in
    v4-*) echo tpu-ubuntu2204-base ;;
    v5litepod-* | v5e-*) echo v2-alpha-tpuv5-lite ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v6e-*) echo v2-alpha-tpuv6e ;;
    *) die "no default runtime version for '$1'; set RUNTIME_VERSION" ;;
  esac
}

# tpu_state: the node's state (READY, CREATING, PREEMPTED, ...) or NOT_FOUND.
tpu_state() {
  local state
  location_flags
  if ! state=$(gcloud compute tpus tpu-vm describe "$TPU_NAME" "${LOCATION[@]}" \
    --format='value(state)' 2>/dev/null); then
    state=NOT_FOUND
  fi
  echo "${state:-NOT_FOUND}"
}

# qr_state: the queued resource's state (WAITING_FOR_RESOURCES, ACTIVE, SUSPENDED, FAILED, ...) or NOT_FOUND.
qr_state() {
  local state
  location_flags
  if ! state=$(gcloud compute tpus queued-resources describe "$QR_NAME" "${LOCATION[@]}" \
    --format='value(state.state)' 2>/dev/null); then
    state=NOT_FOUND
  fi
  echo "${state:-NOT_FOUND}"
}

# workdir_on_workers WORKDIR: gs://BUCKET/PATH -> MOUNT_ROOT/BUCKET/PATH (the gcsfuse mount); other paths unchanged.
workdir_on_workers() {
  if [[ "$1" == gs://* ]]; then
    local rest=${1#gs://}
    echo "$MOUNT_ROOT/${rest%/}"
  else
    echo "$1"
  fi
}

bucket_of() {
  local rest=${1#gs://}
  echo "${rest%%/*}"
}

# job_state: summarize `remote.sh status` of every worker as failed | running | idle | done | unknown.
# One failed worker fails the job (the others are usually stuck in a collective).
job_state() {
  local out
  if ! out=$(remote all status 2>/dev/null) || [[ -z "$out" ]]; then
    echo unknown
    return 0
  fi
  summarize_status <<<"$out"
}

# summarize_status < STATUS_LINES: the rule of job_state, on "worker=N running PID|exited CODE|idle" lines.
summarize_status() {
  awk '
    /worker=[^ ]+ exited / { if ($3 == "0") done++; else failed++; next }
    /worker=[^ ]+ running / { running++; next }
    /worker=[^ ]+ idle/ { idle++; next }
    END {
      if (failed) print "failed"; else if (running) print "running"; else if (idle) print "idle";
      else if (done) print "done"; else print "unknown"
    }'
}
