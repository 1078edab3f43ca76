#!/usr/bin/env bash
# Put a model checkpoint (HF layout) on every worker's disk, where the config's actor.path expects it.
set -euo pipefail
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SETTINGS=(MODEL_SRC MODEL_DIR WORKER)

usage() {
  cat <<'EOF_USAGE'
usage: launch/fetch_model.sh --tpu-name=NAME --zone=ZONE --model-src=SRC [--model-dir=DIR]
  (every --flag-name=VALUE may also be given as the environment variable FLAG_NAME=VALUE)

  --model-src   gs://BUCKET/PATH (a copy of the HF checkpoint directory; best for gated models) or
                hf:ORG/NAME (hf download on each worker; gated repos need `hf auth login` there first)  [required]
  --model-dir   target directory on the workers, relative to the package directory (default
                models/<last part of SRC>, which is what the paper configs' actor.path expects)
  --worker      all (default) or one worker index
  --tpu-name, --zone, --project, --dry-run=1 as for the other scripts
EOF_USAGE
}

parse_flags "$@"
require TPU_NAME ZONE MODEL_SRC
case "$MODEL_SRC" in
  gs://* | hf:*) ;;
  *) die "MODEL_SRC must be gs://BUCKET/PATH or hf:ORG/NAME, got '$MODEL_SRC'" ;;
esac
src=${MODEL_SRC%/}
MODEL_DIR=${MODEL_DIR:-models/${src##*/}}
log "fetching $MODEL_SRC to $MODEL_DIR on $TPU_NAME"
remote "${WORKER:-all}" "fetch $(printf '%q' "$MODEL_SRC") $(printf '%q' "$MODEL_DIR")"
