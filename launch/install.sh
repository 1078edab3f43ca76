#!/usr/bin/env bash
# Ship this repository to every worker of a TPU VM / slice, create its virtualenv (Python 3.11 via uv) with
# spar_jax and jax[tpu], and mount the GCS bucket(s) used for the workdir.
set -euo pipefail
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SETTINGS=(BUCKETS PYTHON_VERSION JAX_SPEC WORKER)

usage() {
  cat <<'EOF_USAGE'
usage: launch/install.sh --tpu-name=NAME --zone=ZONE [options]
  (every --flag-name=VALUE may also be given as the environment variable FLAG_NAME=VALUE)

  --tpu-name        the TPU VM / slice                                               [required]
  --zone            its zone                                                         [required]
  --project         GCP project (default: gcloud's configured project)
  --buckets="B1 B2" GCS buckets to mount with gcsfuse at MOUNT_ROOT/B (e.g. the workdir's bucket)
  --mount-root      where buckets are mounted on the workers (default /gcs)
  --python-version  Python for the venv (default 3.11; uv downloads it if the image lacks it)
  --jax-spec        pip requirement for JAX on TPU (default "jax[tpu]")
  --worker          all (default) or one worker index
  --remote-dir      package directory under the worker's home (default spar_jax); --venv (default spar_venv)
  --dry-run=1       print the gcloud commands instead of running them
EOF_USAGE
}

parse_flags "$@"
require TPU_NAME ZONE
WORKER=${WORKER:-all}

archive_dir=$(mktemp -d)
trap 'rm -rf "$archive_dir"' EXIT
archive="$archive_dir/spar_jax.tar.gz"
log "packing $REPO_DIR"
tar -C "$REPO_DIR" --exclude=./.venv --exclude=./.git --exclude=./runs --exclude=./models --exclude='__pycache__' \
  --exclude='*.egg-info' --exclude=./.pytest_cache -czf "$archive" .

log "copying to $TPU_NAME (worker $WORKER)"
tpu tpu-vm scp "$archive" "$TPU_NAME:spar_jax.tar.gz" --worker="$WORKER"
q_dir="\"\$HOME\"/$(printf '%q' "$REMOTE_DIR")"
tpu tpu-vm ssh "$TPU_NAME" --worker="$WORKER" \
  --command="mkdir -p $q_dir && tar -xzf \"\$HOME/spar_jax.tar.gz\" -C $q_dir && rm \"\$HOME/spar_jax.tar.gz\""

log "installing the package and jax[tpu] (worker $WORKER)"
remote "$WORKER" setup SPAR_PYTHON_VERSION="${PYTHON_VERSION:-3.11}" SPAR_JAX_SPEC="${JAX_SPEC:-jax[tpu]}"

for bucket in ${BUCKETS:-}; do
  log "mounting gs://$bucket"
  remote "$WORKER" "mount $(printf '%q' "$bucket")"
done
log "installed on $TPU_NAME"
