"""One run per workdir: ``WORKDIR/LOCK.json`` refuses a second run while the first is alive.

Two runs writing one workdir would each skip, resume or overwrite the other's steps; the artifacts are written
atomically, but which run's records a later step reads would be a race. So a run holds the workdir for its whole
life, and another run on the same workdir stops with one message naming the holder (pid, host, since when):

    with workdir_lock.hold(cfg.workdir):
        ...  # the stages

The lock is a JSON record ``{"token", "host", "pid", "started", "heartbeat"}`` whose ``heartbeat`` (Unix seconds) the
holder rewrites every ``beat_s`` seconds from a daemon thread. It works on any file system the workdir lives on
(local disk, NFS, a gcsfuse-mounted bucket), because it relies on no OS file lock:

- a holder on this host whose process is gone, or whose heartbeat is older than ``stale_s``, is dead: its lock is
  taken over with a warning (a run killed by SIGKILL resumes at once);
- a holder on another host (a preempted VM's run, restarted elsewhere) is watched for up to ``stale_s``: a heartbeat
  that moves means the run is alive (refused), one that stops means it is dead (taken over);
- a holder that finds its lock taken over (it was stopped longer than ``stale_s``, then continued) stops at its
  next beat, so the two runs overlap by at most one beat.

Multi-process runs: process 0 holds the lock; the outcome is agreed, so every process stops or goes on together.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from typing import Callable, Iterator

from spar_jax import files
from spar_jax.fingerprint import read_record
from spar_jax.parallel import agree

NAME = "LOCK.json"
BEAT_S = 10.0  # how often the holder proves it is alive
STALE_S = 60.0  # a heartbeat older than this is a dead run's (six missed beats)
_log = logging.getLogger(__name__)


class WorkdirInUseError(ValueError):
    """Another live run holds the workdir."""


def _read(path: str) -> dict | None:
    """The lock record; None when absent, {} when torn or foreign (treated as a dead holder's)."""
    record = read_record(path)
    return record if record is None or isinstance(record, dict) else {}


def _alive_here(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _describe(path: str, record: dict) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(record.get("started", 0)))
    return f"pid {record.get('pid')} on host {record.get('host')!r}, running since {started} ({path})"


def acquire(workdir: str, *, beat_s: float = BEAT_S, stale_s: float = STALE_S) -> dict:
    """Take the workdir's lock for this process and return its record; raises WorkdirInUseError if a live run holds
    it (see the module docstring for how a dead one is told apart). Waits up to ``stale_s`` for a holder on another
    host."""
    path = os.path.join(workdir, NAME)
    mine = {"token": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
    deadline = time.time() + stale_s
    seen: float | None = None
    while True:
        holder = _read(path)
        if holder is None:
            if _create(path, {**mine, "heartbeat": time.time()}):
                return mine
            continue  # another run created it first: look at it
        if not holder and time.time() - _mtime(path) < 5.0:  # being written by a run starting right now
            time.sleep(0.2)
            continue
        age = time.time() - float(holder.get("heartbeat", 0) or 0)
        here = holder.get("host") == mine["host"]
        dead = age > stale_s or not holder.get("token") or (here and not _alive_here(int(holder.get("pid", -1))))
        if not dead and here:
            raise WorkdirInUseError(_in_use(workdir, path, holder))
        if not dead:  # another host: alive only if its heartbeat moves
            if seen is not None and holder["heartbeat"] != seen:
                raise WorkdirInUseError(_in_use(workdir, path, holder))
            if seen is None:
                _log.warning(
                    "%s: held by %s; waiting up to %.0f s for its heartbeat", workdir, _describe(path, holder), stale_s
                )
            seen = holder["heartbeat"]
            if time.time() < deadline:
                time.sleep(min(beat_s, max(deadline - time.time(), 0.0)))
                continue
        _log.warning("%s: taking over the lock of a run that is gone (%s)", workdir, _describe(path, holder))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _mtime(path: str) -> float:
    try:
        return os.path.getmtime(path)
    except OSError:
        return 0.0


def _in_use(workdir: str, path: str, holder: dict) -> str:
    return (
        f"workdir {workdir} is in use by another run: {_describe(path, holder)}. Stop that run first, or give this "
        f"one another workdir; if that run is gone and the lock stays, delete {path}."
    )


def _create(path: str, record: dict) -> bool:
    """Create ``path`` holding ``record`` only if it does not exist; True if this call created it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)
        f.flush()
        os.fsync(f.fileno())
    return (_read(path) or {}).get("token") == record["token"]  # file systems without O_EXCL: last writer wins


def _lost(workdir: str, holder: dict | None) -> None:
    who = _describe(os.path.join(workdir, NAME), holder) if holder else "nobody (the lock file was deleted)"
    print(
        f"error: workdir {workdir}: this run's lock is now held by {who}; stopping so that two runs do not "
        "write one workdir",
        file=sys.stderr,
        flush=True,
    )
    os._exit(3)


def _beat(workdir: str, mine: dict, beat_s: float, stop: threading.Event, on_lost: Callable) -> None:
    path = os.path.join(workdir, NAME)
    while not stop.wait(beat_s):
        holder = _read(path)
        if not holder or holder.get("token") != mine["token"]:
            if not stop.is_set():
                on_lost(workdir, holder)
            return
        try:
            files.write_json(path, {**mine, "heartbeat": time.time()}, indent=None)
        except OSError as e:  # a full disk or a flaky mount: keep beating; the lock goes stale only if this persists
            _log.warning("%s: could not renew the workdir lock: %s", workdir, e)


@contextlib.contextmanager
def hold(
    workdir: str, *, beat_s: float = BEAT_S, stale_s: float = STALE_S, on_lost: Callable = _lost
) -> Iterator[None]:
    """Hold the workdir's lock for the ``with`` body (process 0; the others follow its outcome); released on exit,
    also by an exception. ``on_lost(workdir, holder)`` runs if another run takes the lock over (default: one error
    line, exit status 3)."""
    os.makedirs(workdir, exist_ok=True)
    error, mine = "", None
    if files.is_writer():
        try:
            mine = acquire(workdir, beat_s=beat_s, stale_s=stale_s)
        except WorkdirInUseError as e:
            error = str(e)
    if agree(int(bool(error))):
        raise WorkdirInUseError(error or f"workdir {workdir} is in use by another run (found by process 0)")
    stop = threading.Event()
    thread = None
    if mine is not None:
        thread = threading.Thread(target=_beat, args=(workdir, mine, beat_s, stop, on_lost), daemon=True)
        thread.start()
    try:
        yield
    finally:
        stop.set()
        if mine is not None:
            thread.join()
            path = os.path.join(workdir, NAME)
            if (_read(path) or {}).get("token") == mine["token"]:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
