"""A workdir on a gcsfuse mount of a bucket without hierarchical namespace is refused at start-up (a fake gcloud on
PATH answers the bucket query)."""

import logging
import os

import pytest

from spar_jax import bucket


def _mounts(tmp_path, point):
    path = tmp_path / "mounts"
    path.write_text(f"/dev/sda1 / ext4 rw 0 0\nruns-bucket {point} fuse.gcsfuse rw,nosuid 0 0\n")
    return str(path)


def _gcloud(tmp_path, monkeypatch, answer, code=0):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "gcloud"
    script.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/gcloud_args\necho {answer}\nexit {code}\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")


def test_the_bucket_of_a_workdir_is_found_by_its_deepest_mount(tmp_path):
    mounts = _mounts(tmp_path, "/mnt/gcs")
    assert bucket.gcsfuse_bucket("/mnt/gcs/runs/demo", mounts) == "runs-bucket"
    assert bucket.gcsfuse_bucket("/mnt/gcsx/runs", mounts) is None
    assert bucket.gcsfuse_bucket("/home/me/runs", mounts) is None


def test_a_flat_bucket_is_refused(tmp_path, monkeypatch):
    _gcloud(tmp_path, monkeypatch, "False")
    with pytest.raises(ValueError, match=r"gs://runs-bucket without hierarchical namespace"):
        bucket.check_workdir("/mnt/gcs/runs/demo", _mounts(tmp_path, "/mnt/gcs"))
    assert "buckets describe gs://runs-bucket" in (tmp_path / "gcloud_args").read_text()


def test_an_hns_bucket_or_a_local_disk_is_accepted(tmp_path, monkeypatch, caplog):
    _gcloud(tmp_path, monkeypatch, "True")
    bucket.check_workdir("/mnt/gcs/runs/demo", _mounts(tmp_path, "/mnt/gcs"))
    bucket.check_workdir(str(tmp_path / "local"), _mounts(tmp_path, "/mnt/gcs"))
    monkeypatch.setenv("PATH", "/nonexistent")  # no gcloud: a warning, not an error
    with caplog.at_level(logging.WARNING):
        bucket.check_workdir("/mnt/gcs/runs/demo", _mounts(tmp_path, "/mnt/gcs"))
    assert "could not be read" in caplog.text
