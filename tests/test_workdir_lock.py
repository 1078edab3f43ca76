"""One run per workdir: a live holder refuses a second run, a dead one is taken over, a holder that lost its lock
stops, and ``main.run`` refuses a held workdir before loading anything."""

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from spar_jax import workdir_lock as W


def _write(workdir, **record):
    with open(os.path.join(workdir, W.NAME), "w") as f:
        json.dump({"token": "other", "host": socket.gethostname(), "pid": os.getpid(), "started": 0.0, **record}, f)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_second_run_is_refused_while_the_first_holds_the_workdir(tmp_path):
    workdir = str(tmp_path)
    with W.hold(workdir):
        record = json.load(open(tmp_path / W.NAME))
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        with pytest.raises(W.WorkdirInUseError) as e:
            with W.hold(workdir):
                pass
        message = str(e.value)
        assert f"workdir {workdir} is in use by another run: pid {os.getpid()} on host" in message
        assert str(tmp_path / W.NAME) in message and "\n" not in message
        assert json.load(open(tmp_path / W.NAME))["token"] == record["token"]  # the refused run did not touch it
    assert not (tmp_path / W.NAME).exists()  # released on exit

    with pytest.raises(RuntimeError):  # released when the body fails too
        with W.hold(workdir):
            raise RuntimeError
    assert not (tmp_path / W.NAME).exists()


def test_a_dead_holder_on_this_host_is_taken_over_at_once(tmp_path, caplog):
    _write(str(tmp_path), pid=_dead_pid(), heartbeat=time.time())  # a run killed by SIGKILL a moment ago
    with caplog.at_level(logging.WARNING):
        start = time.time()
        with W.hold(str(tmp_path)):
            assert json.load(open(tmp_path / W.NAME))["token"] != "other"
    assert time.time() - start < 5
    assert "taking over the lock of a run that is gone" in caplog.text

    _write(str(tmp_path), heartbeat=time.time() - 2 * W.STALE_S)  # alive pid, no heartbeat for long: stopped or reused
    with W.hold(str(tmp_path)):
        pass
    (tmp_path / W.NAME).write_text("{")  # torn
    os.utime(tmp_path / W.NAME, (0, 0))
    with W.hold(str(tmp_path)):
        pass


def test_a_holder_on_another_host_is_watched_for_its_heartbeat(tmp_path):
    workdir = str(tmp_path)
    _write(workdir, host="other-vm", pid=1, heartbeat=time.time())
    start = time.time()
    with W.hold(workdir, beat_s=0.05, stale_s=0.5):  # its heartbeat stopped: a preempted VM's run, taken over
        pass
    assert time.time() - start >= 0.4

    stop = threading.Event()

    def beating():
        while not stop.wait(0.05):
            _write(workdir, host="other-vm", pid=1, heartbeat=time.time())

    _write(workdir, host="other-vm", pid=1, heartbeat=time.time())
    thread = threading.Thread(target=beating)
    thread.start()
    try:
        with pytest.raises(W.WorkdirInUseError, match="pid 1 on host 'other-vm'"):
            with W.hold(workdir, beat_s=0.1, stale_s=5.0):
                pass
    finally:
        stop.set()
        thread.join()


def test_a_holder_that_lost_its_lock_stops_at_its_next_beat(tmp_path):
    lost = []
    with W.hold(str(tmp_path), beat_s=0.05, on_lost=lambda workdir, holder: lost.append(holder)):
        before = json.load(open(tmp_path / W.NAME))["heartbeat"]
        time.sleep(0.3)
        assert json.load(open(tmp_path / W.NAME))["heartbeat"] > before  # it beats
        _write(str(tmp_path), host="other-vm", heartbeat=time.time())  # taken over while it was stopped
        for _ in range(100):
            if lost:
                break
            time.sleep(0.05)
    assert lost and lost[0]["host"] == "other-vm"
    assert json.load(open(tmp_path / W.NAME))["token"] == "other"  # the new holder's lock is left alone


def test_the_default_on_lost_exits_with_one_line(tmp_path):
    code = (
        "import json, os, time\n"
        "from spar_jax import workdir_lock as W\n"
        f"with W.hold({str(tmp_path)!r}, beat_s=0.05):\n"
        f"    json.dump({{'token': 'x', 'host': 'vm', 'pid': 1, 'started': 0, 'heartbeat': time.time()}},"
        f" open(os.path.join({str(tmp_path)!r}, W.NAME), 'w'))\n"
        "    time.sleep(30)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 3
    assert p.stderr.strip().splitlines() == [
        f"error: workdir {tmp_path}: this run's lock is now held by pid 1 on host 'vm', running since "
        f"1970-01-01 00:00:00 UTC ({tmp_path / W.NAME}); stopping so that two runs do not write one workdir"
    ]


def test_main_refuses_a_held_workdir_before_loading_a_model(tmp_path):
    from spar_jax import main
    from spar_jax.config import default_config

    c = default_config()
    c.workdir = str(tmp_path / "run")
    c.actor.path = str(tmp_path / "no-such-model")  # would fail loudly if anything were loaded
    os.makedirs(c.workdir)
    _write(c.workdir, heartbeat=time.time())  # this live process, another run
    with pytest.raises(W.WorkdirInUseError, match="is in use by another run"):
        main.run(c)
    assert sorted(os.listdir(c.workdir)) == [W.NAME]
