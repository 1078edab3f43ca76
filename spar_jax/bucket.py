"""Refuse a workdir on a gcsfuse-mounted bucket without hierarchical namespace.

Orbax checkpoints and the HF export finish by renaming a directory. On a flat bucket gcsfuse emulates that rename by
copying every object and deleting the originals, so a preemption in the middle leaves a half-copied step that looks
final. With hierarchical namespace (HNS) a rename is one atomic operation. This check runs at start-up, before
anything is loaded: the workdir's mount is looked up in ``/proc/mounts``; on a gcsfuse mount the bucket's HNS setting
is read with ``gcloud storage buckets describe``. A flat bucket is an error; an unknown setting (no gcloud, no
permission) is a warning.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess

MOUNTS = "/proc/mounts"
_log = logging.getLogger(__name__)


def gcsfuse_bucket(path: str, mounts: str = MOUNTS) -> str | None:
    """The bucket mounted by gcsfuse at the deepest mount point holding ``path``, or None (not on gcsfuse)."""
    try:
        with open(mounts) as f:
            entries = [line.split() for line in f if line.strip()]
    except OSError:
        return None
    path = os.path.abspath(path)
    best, bucket = "", None
    for fields in entries:
        if len(fields) < 3:
            continue
        source, point, fstype = fields[0], fields[1].replace("\\040", " "), fields[2]
        if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) > len(best):
            best, bucket = point, source if fstype == "fuse.gcsfuse" else None
    return bucket


def hierarchical_namespace(bucket: str) -> bool | None:
    """True/False from ``gcloud storage buckets describe``; None when it cannot be read."""
    if shutil.which("gcloud") is None:
        return None
    try:
        out = subprocess.run(
            [
                "gcloud",
                "storage",
                "buckets",
                "describe",
                f"gs://{bucket}",
                "--format=value(hierarchical_namespace.enabled)",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip().lower() == "true"


def check_workdir(workdir: str, mounts: str = MOUNTS) -> None:
    """Raise ValueError for a workdir on a gcsfuse mount of a bucket without hierarchical namespace."""
    bucket = gcsfuse_bucket(workdir, mounts)
    if bucket is None:
        return
    hns = hierarchical_namespace(bucket)
    if hns is None:
        _log.warning(
            "workdir %s is on gcsfuse bucket %s whose hierarchical namespace setting could not be read; "
            "without it a preempted checkpoint save can leave a half-copied step",
            workdir,
            bucket,
        )
    elif not hns:
        raise ValueError(
            f"workdir {workdir} is on gcsfuse bucket gs://{bucket} without hierarchical namespace: directory renames "
            "there are copies, so a preempted checkpoint or export can leave a half-written step that looks final. "
            "Use a bucket created with --enable-hierarchical-namespace (see docs/robustness.md)."
        )
