#!/usr/bin/env bash
# Start `python -m spar_jax.main --config=CONFIG` on every worker (one JAX process per host), in the background.
# With a gs:// workdir the bucket is mounted on every worker first; rerunning the same command resumes from the
# workdir (stages skip finished shards, training restores its last checkpoint).
set -euo pipefail
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SETTINGS=(CONFIG WORKDIR ARGS WAIT POLL_SECONDS)

usage() {
  cat <<'EOF_USAGE'
usage: launch/run.sh --tpu-name=NAME --zone=ZONE --config=configs/NAME.py [--workdir=gs://BUCKET/PATH] [options]
  (every --flag-name=VALUE may also be given as the environment variable FLAG_NAME=VALUE)

  --config        config file, relative to the repository (e.g. configs/llama3_8b.py)          [required]
  --workdir       gs://BUCKET/PATH (mounted with gcsfuse at MOUNT_ROOT/BUCKET/PATH on every worker) or a
                  path on the workers; passed as --config.workdir (default: the config's workdir)
  --args="..."    more flags for spar_jax.main, e.g. "--config.engine.batch_size=64"
  --wait=1        wait for the job to finish; exit 0 if every worker exited 0
  --tpu-name, --zone, --project, --mount-root, --dry-run=1 as for the other scripts
Follow the log with launch/logs.sh; stop with launch/stop.sh.
EOF_USAGE
}

parse_flags "$@"
require TPU_NAME ZONE CONFIG
[[ -f "$REPO_DIR/$CONFIG" ]] || die "CONFIG '$CONFIG' is not a file under $REPO_DIR"

args="${ARGS:-}"
if [[ -n "${WORKDIR:-}" ]]; then
  if [[ "$WORKDIR" == gs://* ]]; then
    bucket=$(bucket_of "$WORKDIR")
    [[ -n "$bucket" ]] || die "WORKDIR '$WORKDIR' has no bucket"
    log "mounting gs://$bucket on every worker"
    remote all "mount $(printf '%q' "$bucket")"
  fi
  args="--config.workdir=$(workdir_on_workers "$WORKDIR") $args"
fi

log "starting spar_jax.main --config=$CONFIG $args on every worker of $TPU_NAME"
remote all start SPAR_CONFIG="$CONFIG" SPAR_ARGS="$args"

if [[ "${WAIT:-0}" == 1 && "${DRY_RUN:-0}" != 1 ]]; then
  while :; do
    sleep "${POLL_SECONDS:-60}"
    state=$(job_state)
    case "$state" in
      done) log "job finished"; exit 0 ;;
      failed) log "job failed on at least one worker (launch/logs.sh --worker=N)"; exit 1 ;;
      idle) die "no job is running on $TPU_NAME" ;;
      *) log "job $state" ;;
    esac
  done
fi
log "started; follow with: launch/logs.sh --tpu-name=$TPU_NAME --zone=$ZONE"
