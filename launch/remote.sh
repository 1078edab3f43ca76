#!/usr/bin/env bash
# Runs ON a TPU worker (the other scripts call it through `gcloud compute tpus tpu-vm ssh --worker=...`).
# It is the only place that knows the worker-side layout:
#   ~/$SPAR_REMOTE_DIR   the package source        ~/$SPAR_VENV   its virtualenv
#   ~/$SPAR_LOG_DIR      run.log, pid, exit_code   $SPAR_MOUNT_ROOT/BUCKET   the GCS bucket (gcsfuse)
set -euo pipefail

usage() {
  cat <<'EOF'
usage: remote.sh COMMAND        (settings come from SPAR_* environment variables)
  setup           install uv, create the venv with Python $SPAR_PYTHON_VERSION, pip install the package + $SPAR_JAX_SPEC
  mount BUCKET    mount gs://BUCKET at $SPAR_MOUNT_ROOT/BUCKET with gcsfuse (installs gcsfuse if missing)
  fetch SRC DIR   copy a checkpoint to DIR: SRC is gs://... (gcloud storage) or hf:ORG/NAME (hf download)
  start           start `python -m spar_jax.main --config=$SPAR_CONFIG $SPAR_ARGS` in the background
  status          print "worker=N running PID" | "worker=N exited CODE" | "worker=N idle"
  stop            stop the job started by `start` (its process group)
  tail            print the job log (SPAR_FOLLOW=1: follow it)
EOF
}

REMOTE_DIR="$HOME/${SPAR_REMOTE_DIR:-spar_jax}"
VENV="$HOME/${SPAR_VENV:-spar_venv}"
LOG_DIR="$HOME/${SPAR_LOG_DIR:-spar_logs}"
PYTHON="${SPAR_PYTHON:-$VENV/bin/python}"
METADATA_URL="${SPAR_METADATA_URL-http://metadata.google.internal/computeMetadata/v1/instance/attributes}"

metadata() {  # metadata KEY: a TPU VM metadata attribute, empty when not on a TPU VM
  [[ -n "$METADATA_URL" ]] || return 0
  curl -sf --max-time 5 -H 'Metadata-Flavor: Google' "$METADATA_URL/$1" || true
}

worker_id() {
  local id
  id=$(metadata agent-worker-number)
  echo "${id:-0}"
}

# Multi-host: every worker runs one JAX process. spar_jax.parallel.maybe_initialize_distributed reads these
# variables; the worker list and ids come from the same metadata JAX's own TPU cluster detection reads.
export_distributed_env() {
  local endpoints first host count
  endpoints=$(metadata worker-network-endpoints)
  [[ -n "$endpoints" ]] || return 0
  count=$(awk -F, '{print NF}' <<<"$endpoints")
  ((count > 1)) || return 0
  first=${endpoints%%,*}
  host=$(awk -F: '{print (NF == 3) ? $3 : $1}' <<<"$first")
  export JAX_COORDINATOR_ADDRESS="$host:${SPAR_COORDINATOR_PORT:-8476}"
  export JAX_NUM_PROCESSES="$count"
  JAX_PROCESS_ID=$(worker_id)
  export JAX_PROCESS_ID
}

cmd_setup() {
  local version="${SPAR_PYTHON_VERSION:-3.11}"
  python3 -m pip install --user --quiet --upgrade uv
  "$HOME/.local/bin/uv" venv --allow-existing --python "$version" "$VENV"
  "$HOME/.local/bin/uv" pip install --python "$VENV/bin/python" --quiet -e "$REMOTE_DIR" "${SPAR_JAX_SPEC:-jax[tpu]}"
  "$VENV/bin/python" -c 'import jax; print("worker", jax.process_index(), jax.device_count(), "devices")' || true
}

cmd_mount() {
  local bucket="${1:?usage: remote.sh mount BUCKET}" root="${SPAR_MOUNT_ROOT:-/gcs}"
  local dir="$root/$bucket"
  if mountpoint -q "$dir" 2>/dev/null; then
    echo "gs://$bucket already mounted at $dir"
    return 0
  fi
  if ! command -v gcsfuse >/dev/null; then
    local repo
    repo="gcsfuse-$(lsb_release -c -s)"
    echo "deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt $repo main" |
      sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null
    curl -sf https://packages.cloud.google.com/apt/doc/apt-key.gpg |
      sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null
    sudo apt-get update -qq && sudo apt-get install -y -qq gcsfuse
  fi
  sudo mkdir -p "$dir"
  sudo chown "$(id -u):$(id -g)" "$dir"
  # --rename-dir-limit: checkpoints and exports are written to a temporary directory and renamed into place.
  # No metadata caching: other workers write to the same bucket.
  # shellcheck disable=SC2086  # SPAR_GCSFUSE_FLAGS is a list of flags
  gcsfuse ${SPAR_GCSFUSE_FLAGS:---implicit-dirs --rename-dir-limit=1000000 --metadata-cache-ttl-secs=0} "$bucket" "$dir"
  echo "gs://$bucket mounted at $dir"
}

cmd_fetch() {
  local src="${1:?usage: remote.sh fetch SRC DIR}" dir="${2:?usage: remote.sh fetch SRC DIR}"
  [[ "$dir" == /* ]] || dir="$REMOTE_DIR/$dir"
  if [[ -f "$dir/config.json" ]]; then
    echo "$dir already holds a checkpoint"
    return 0
  fi
  mkdir -p "$dir.partial"
  case "$src" in
    gs://*) gcloud storage cp -r "${src%/}/*" "$dir.partial/" ;;
    hf:*) "$VENV/bin/hf" download "${src#hf:}" --local-dir "$dir.partial" --exclude 'original/*' ;;
    *) echo "error: SRC must be gs://BUCKET/PATH or hf:ORG/NAME, got '$src'" >&2; exit 2 ;;
  esac
  mv "$dir.partial" "$dir"
  echo "checkpoint at $dir"
}

cmd_start() {
  : "${SPAR_CONFIG:?SPAR_CONFIG (the config file, relative to the package) is required}"
  mkdir -p "$LOG_DIR"
  if [[ ! -f "$LOG_DIR/exit_code" && -f "$LOG_DIR/pid" ]] && kill -0 "$(cat "$LOG_DIR/pid")" 2>/dev/null; then
    echo "error: a job is already running (pid $(cat "$LOG_DIR/pid")); stop it first" >&2
    exit 1
  fi
  rm -f "$LOG_DIR/exit_code"
  export_distributed_env
  local args=()
  if [[ -n "${SPAR_ARGS:-}" ]]; then
    read -r -a args <<<"$SPAR_ARGS"
  fi
  cd "$REMOTE_DIR"
  # setsid: the job survives the ssh session and has its own process group, which `stop` signals.
  # shellcheck disable=SC2016  # $0.. are expanded by the inner shell
  setsid nohup bash -c '"$@"; echo $? > "$0/exit_code"' "$LOG_DIR" \
    "$PYTHON" -m spar_jax.main --config="$SPAR_CONFIG" "${args[@]}" \
    >>"$LOG_DIR/run.log" 2>&1 </dev/null &
  echo $! >"$LOG_DIR/pid"
  echo "worker=$(worker_id) started pid $! (log $LOG_DIR/run.log)"
}

cmd_status() {
  local id
  id=$(worker_id)
  if [[ -f "$LOG_DIR/exit_code" ]]; then
    echo "worker=$id exited $(cat "$LOG_DIR/exit_code")"
  elif [[ -f "$LOG_DIR/pid" ]] && kill -0 "$(cat "$LOG_DIR/pid")" 2>/dev/null; then
    echo "worker=$id running $(cat "$LOG_DIR/pid")"
  elif [[ -f "$LOG_DIR/pid" ]]; then
    echo "worker=$id exited killed"
  else
    echo "worker=$id idle"
  fi
}

cmd_stop() {
  local pid
  [[ -f "$LOG_DIR/pid" ]] || { echo "worker=$(worker_id) no job"; return 0; }
  pid=$(cat "$LOG_DIR/pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL -- "-$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$LOG_DIR/pid"
  echo "worker=$(worker_id) stopped"
}

cmd_tail() {
  touch "$LOG_DIR/run.log" 2>/dev/null || { mkdir -p "$LOG_DIR" && touch "$LOG_DIR/run.log"; }
  if [[ "${SPAR_FOLLOW:-0}" == 1 ]]; then
    tail -n "${SPAR_LINES:-100}" -F "$LOG_DIR/run.log"
  else
    tail -n "${SPAR_LINES:-100}" "$LOG_DIR/run.log"
  fi
}

main() {
  local command="${1:-}"
  shift || true
  case "$command" in
    setup) cmd_setup "$@" ;;
    mount) cmd_mount "$@" ;;
    fetch) cmd_fetch "$@" ;;
    start) cmd_start "$@" ;;
    status) cmd_status "$@" ;;
    stop) cmd_stop "$@" ;;
    tail) cmd_tail "$@" ;;
    -h | --help | help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

main "$@"
