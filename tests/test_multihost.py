"""A real multi-process run on CPU: 2 processes x 4 fake devices joined by ``jax.distributed`` (gloo collectives),
one (data, fsdp, tensor) mesh over all 8 devices, compared with 1 process x 8 devices on the same mesh shape.

Each process runs ``tests/support/multihost_driver.py``: greedy ``Engine.generate``, one DPO step with ``Trainer``
(reference log-probs, an Orbax checkpoint at the step), a fresh ``Trainer`` restoring that checkpoint, and
``Trainer.export``.

The mesh is (1, 4, 2): devices 0-3 belong to process 0 and 4-7 to process 1, so the fsdp axis crosses the process
boundary; parameters, optimizer state and batch rows are then split between processes (nothing is fully
addressable), while the tensor axis stays inside a process. Other shapes run with SPAR_TEST_MULTIHOST_MESH=2,2,2 (or
1,8,1, ...); only one shape runs by default to keep the test near a minute on 2 CPU cores.
"""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

from tiny_checkpoints import copy_demo_tokenizer, hf_config, random_tensors, write_checkpoint

DRIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "support", "multihost_driver.py")
MESH = os.environ.get("SPAR_TEST_MULTIHOST_MESH", "1,4,2")  # (data, fsdp, tensor)
NUM_PROCESSES, DEVICES = 2, 8
TIMEOUT_S = 300  # per launch (the multi-process pair and the single process run side by side)
SEED = 3


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random llama with the demo tokenizer (vocab 49152)."""
    directory = write_checkpoint(tmp_path_factory.mktemp("tiny") / "llama", "llama", seed=SEED, vocab_size=49152)
    copy_demo_tokenizer(directory)
    return directory


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _env(num_processes: int, process_id: int, port: int) -> dict:
    # No shared compilation cache either: these processes compile what they run, as a user's job would.
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "JAX_COORDINATOR_ADDRESS",
            "JAX_NUM_PROCESSES",
            "JAX_PROCESS_ID",
            "TPU_WORKER_HOSTNAMES",
            "JAX_COMPILATION_CACHE_DIR",
        )
    }
    env.update(
        XLA_FLAGS=f"--xla_force_host_platform_device_count={DEVICES // num_processes}",
        JAX_PLATFORMS="cpu",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    if num_processes > 1:
        env.update(
            JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
            JAX_NUM_PROCESSES=str(num_processes),
            JAX_PROCESS_ID=str(process_id),
        )
    return env


def _log_tail(path: str, limit: int = 4000) -> str:
    """The end of a child's output, without XLA's repetitive SPMD-partitioner performance warnings."""
    with open(path, errors="replace") as f:
        lines = f.read().splitlines()
    kept = [line for line in lines if "spmd_partitioner.cc" not in line]
    text = "\n".join(kept)[-limit:]
    return f"--- {path} ({len(lines) - len(kept)} SPMD partitioner warnings dropped) ---\n{text}"


def _launch(model_dir: str, out_dir: str, num_processes: int) -> list:
    os.makedirs(out_dir)
    port = _free_port()
    children = []
    for i in range(num_processes):
        log_path = os.path.join(out_dir, f"log_{i}.txt")
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [sys.executable, DRIVER, model_dir, out_dir, MESH],
                env=_env(num_processes, i, port),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        children.append((proc, log_path))
    return children


def _wait(children: list, deadline: float) -> str | None:
    """Wait for every child; kill the rest when one fails or time runs out. Returns an error message or None."""
    error = None
    while error is None and any(p.poll() is None for p, _ in children):
        failed = [p for p, _ in children if p.poll() not in (None, 0)]
        if failed:
            error = f"a child exited with code {failed[0].returncode}"
        elif time.time() > deadline:
            error = f"timed out after {TIMEOUT_S}s"
        else:
            time.sleep(0.2)
    for p, _ in children:
        if p.poll() is None:
            p.kill()
        p.wait()
    if error is None and any(p.returncode != 0 for p, _ in children):
        error = "exit codes " + str([p.returncode for p, _ in children])
    return error


@pytest.fixture(scope="module")
def runs(tiny, tmp_path_factory):
    """Run the 2-process and the 1-process driver (concurrently); return their output dirs and per-process results."""
    root = tmp_path_factory.mktemp("multihost")
    multi, single = str(root / "multi"), str(root / "single")
    start = time.time()
    launches = {"multi": _launch(tiny, multi, NUM_PROCESSES), "single": _launch(tiny, single, 1)}
    try:
        errors = {name: _wait(children, start + TIMEOUT_S) for name, children in launches.items()}
    finally:  # e.g. on KeyboardInterrupt: leave no child behind
        for proc, _ in launches["multi"] + launches["single"]:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    elapsed = time.time() - start
    if any(errors.values()):
        logs = "\n".join(_log_tail(path) for children in launches.values() for _, path in children)
        pytest.fail(f"driver runs failed: {errors}\n{logs}", pytrace=False)
    results = {
        "multi": [json.load(open(os.path.join(multi, f"result_{i}.json"))) for i in range(NUM_PROCESSES)],
        "single": [json.load(open(os.path.join(single, "result_0.json")))],
    }
    print(
        f"\nmultihost: both runs finished in {elapsed:.1f}s; stage times (s): "
        + "; ".join(
            f"{name}[{r['process_index']}] " + ", ".join(f"{k} {v:.1f}" for k, v in r["times"].items())
            for name, rs in results.items()
            for r in rs
        )
    )
    return {"multi_dir": multi, "single_dir": single, **results}


def test_processes_form_one_global_mesh(runs):
    for i, r in enumerate(runs["multi"]):
        assert r["distributed"] and r["process_index"] == i and r["process_count"] == NUM_PROCESSES
        assert r["device_count"] == DEVICES and r["local_device_count"] == DEVICES // NUM_PROCESSES
        assert list(r["mesh_shape"].values()) == [int(n) for n in MESH.split(",")] and r["mesh_is_global"]
        assert not r["q_fully_addressable"] and r["q_spec"] == r["trained_q_spec"]
        # With data = 1 the process boundary cuts the fsdp axis: each process holds half of every sharded parameter
        # (with data = 2 it cuts the data axis and each process holds a full replica).
        assert r["q_local_fraction"] == (0.5 if r["mesh_shape"]["data"] == 1 else 1.0)
    (s,) = runs["single"]
    assert not s["distributed"] and s["process_count"] == 1 and s["device_count"] == s["local_device_count"] == DEVICES
    assert s["mesh_shape"] == runs["multi"][0]["mesh_shape"] and not s["mesh_is_global"] and s["q_fully_addressable"]
    assert s["q_spec"] == runs["multi"][0]["q_spec"] and s["q_local_fraction"] == 1.0


def test_greedy_sampling_matches_the_single_process_run(runs):
    (single,) = runs["single"]
    expected = single["sampling"]
    assert len(expected) == 5 and all(len(c["tokens"]) == 8 or c["finish"] == "stop" for c in expected)
    if MESH == "1,4,2":
        assert single["sampling_batches"] == 2  # 5 prompts, 4 rows per batch: two batches, one overlapped readback
    for r in runs["multi"]:  # every process runs every batch and gets every result back, in request order
        assert r["sampling_batches"] == single["sampling_batches"]
        assert [c["prompt"] for c in r["sampling"]] == [c["prompt"] for c in expected]
        assert [c["tokens"] for c in r["sampling"]] == [c["tokens"] for c in expected], r["process_index"]
        assert [c["finish"] for c in r["sampling"]] == [c["finish"] for c in expected]
        for got, want in zip(r["sampling"], expected):
            np.testing.assert_allclose(got["logprobs"], want["logprobs"], rtol=1e-5, atol=1e-5)


def test_dpo_step_matches_the_single_process_run(runs):
    (single,) = runs["single"]
    want = single["metrics"]
    assert want["grad_norm"] > 0 and want["tokens/chosen"] > 0
    for r in runs["multi"]:
        assert sorted(r["metrics"]) == sorted(want)
        for key, value in want.items():
            np.testing.assert_allclose(r["metrics"][key], value, rtol=1e-5, atol=1e-7, err_msg=key)
        np.testing.assert_allclose(r["ref_logps"], single["ref_logps"], rtol=1e-5)


def test_checkpoint_restores_the_saved_state(runs):
    (single,) = runs["single"]
    for r in runs["multi"] + runs["single"]:
        assert r["restored_step"] == 1 and r["restored_position"] == single["restored_position"]
        assert r["restored_same_structure"] and r["restored_shardings_match"]
        assert r["restored_max_abs_diff"] == 0.0  # bit-exact: every leaf of step, params, optimizer state, rng
    assert sorted(os.listdir(os.path.join(runs["multi_dir"], "ckpt"))) == ["1", "reference_logps.npz"]
    # The saved state itself (params, Adam moments, step, rng) equals the single-process one, leaf by leaf.
    want = single["saved_checksums"]
    for r in runs["multi"]:
        assert sorted(r["saved_checksums"]) == sorted(want)
        for leaf, (total, magnitude) in want.items():
            got_total, got_magnitude = r["saved_checksums"][leaf]
            assert abs(got_magnitude - magnitude) <= 1e-5 * magnitude, leaf
            assert abs(got_total - total) <= 1e-5 * magnitude, leaf


def test_export_is_written_once_and_matches_the_single_process_run(runs):
    multi, single = runs["multi_dir"], runs["single_dir"]
    writer, other = runs["multi"]
    assert writer["export_writes"] and writer["export_metadata_writes"] == 1  # process 0 writes ...
    assert other["export_writes"] == [] and other["export_metadata_writes"] == 0  # ... process 1 only gathers
    assert [name for name in os.listdir(multi) if name.startswith(".tmp")] == []
    files = sorted(os.listdir(os.path.join(multi, "hf")))
    assert files == sorted(os.listdir(os.path.join(single, "hf")))
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(files)
    assert json.load(open(os.path.join(multi, "hf", "config.json"))) == json.load(
        open(os.path.join(single, "hf", "config.json"))
    )
    got = load_file(os.path.join(multi, "hf", "model.safetensors"))
    want = load_file(os.path.join(single, "hf", "model.safetensors"))
    initial = random_tensors(hf_config("llama", vocab_size=49152), SEED)
    assert sorted(got) == sorted(want) == sorted(initial)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5, err_msg=name)
    # the export holds the trained weights (one step at lr 1e-3 moved them), not the starting ones
    assert max(float(np.abs(got[n] - initial[n]).max()) for n in initial) > 1e-4


PIPELINE_ARTIFACTS = (
    "prompts/train.jsonl",
    "prompts/heldout.jsonl",
    "iter_1/mine/shard_00000.jsonl",
    "iter_1/mine/shard_00001.jsonl",
    "iter_1/data/dpo.jsonl",
    "iter_1/data/refiner_sft.jsonl",
    "iter_1/eval/heldout/results.jsonl",
)


def _launch_pipeline(workdir: str, model: str, train_seconds: float, tag: str) -> list:
    """The scripted SPaR pipeline (``tests/support/spar_pipeline_driver.py --scripted``) on 2 processes sharing
    ``workdir``."""
    import spar_pipeline_driver as driver

    port, children = _free_port(), []
    for i in range(NUM_PROCESSES):
        log_path = os.path.join(os.path.dirname(workdir), f"log_{tag}_{i}.txt")
        env = {**_env(NUM_PROCESSES, i, port), "SPAR_TEST_TRAIN_SECONDS": str(train_seconds)}
        with open(log_path, "w") as log:
            children.append(
                (
                    subprocess.Popen(
                        [sys.executable, driver.__file__, workdir, model, "--scripted"],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    ),
                    log_path,
                )
            )
    return children


PIPELINE_TIMEOUT_S = 900  # per launch: each decision is a cross-process broadcast, slow on a busy 2-core machine


def test_pipeline_on_two_processes_killed_and_resumed(tmp_path):
    """Both processes take every skip decision together (process 0 decides): killed during the first training stage
    and relaunched, the pair finishes without hanging at a barrier, rewrites no finished shard, and ends with the
    artifacts of an uninterrupted single-process run."""
    import spar_pipeline_driver as driver

    model = driver.fake_checkpoint(str(tmp_path / "model"))
    reference, workdir = str(tmp_path / "reference"), str(tmp_path / "w")
    driver.run(reference, model, scripted=True)
    children = _launch_pipeline(workdir, model, train_seconds=60, tag="killed")
    deadline = time.time() + PIPELINE_TIMEOUT_S
    kill_when = os.path.join(workdir, "iter_1", "actor", "inputs.json")  # the DPO stage has started
    try:
        while not os.path.exists(kill_when):
            failed = [p.returncode for p, _ in children if p.poll() is not None]
            assert not failed and time.time() < deadline, "\n".join(_log_tail(path) for _, path in children)
            time.sleep(0.05)
    finally:
        for p, _ in children:
            p.kill()
            p.wait()
    assert not os.path.exists(os.path.join(workdir, "iter_1", "actor", "DONE.json"))
    finished = {p: os.stat(os.path.join(workdir, p)).st_mtime_ns for p in PIPELINE_ARTIFACTS[:6]}
    children = _launch_pipeline(workdir, model, train_seconds=0, tag="resumed")
    error = _wait(children, time.time() + PIPELINE_TIMEOUT_S)
    assert error is None, error + "\n" + "\n".join(_log_tail(path) for _, path in children)
    assert {p: os.stat(os.path.join(workdir, p)).st_mtime_ns for p in finished} == finished
    for p in PIPELINE_ARTIFACTS:
        assert open(os.path.join(workdir, p), "rb").read() == open(os.path.join(reference, p), "rb").read(), p
    for stage in ("iter_1/actor", "iter_1/refiner", "iter_1/eval"):
        assert os.path.exists(os.path.join(workdir, stage, "DONE.json")), stage
    leftovers = [os.path.join(r, n) for r, _, names in os.walk(workdir) for n in names if n.startswith(".tmp")]
    assert leftovers == []


LOCK_PROBE = """
import sys
from spar_jax import parallel, workdir_lock
parallel.maybe_initialize_distributed()
try:
    with workdir_lock.hold(sys.argv[1]):
        print("LOCK-HELD")
except workdir_lock.WorkdirInUseError as e:
    print("refused:", e)
    sys.exit(5)
"""


def test_a_held_workdir_stops_every_process(tmp_path):
    """Process 0 finds the workdir held by a live run; every process stops (none waits at a barrier)."""
    from spar_jax import workdir_lock

    workdir = str(tmp_path / "w")
    os.makedirs(workdir)
    with workdir_lock.hold(workdir):  # this test process is the live run
        port, children = _free_port(), []
        for i in range(NUM_PROCESSES):
            log_path = str(tmp_path / f"log_{i}.txt")
            with open(log_path, "w") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-c", LOCK_PROBE, workdir],
                    env=_env(NUM_PROCESSES, i, port),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            children.append((proc, log_path))
        for proc, _ in children:
            proc.wait(timeout=TIMEOUT_S)
    logs = [open(path).read() for _, path in children]
    assert [p.returncode for p, _ in children] == [5, 5], "\n".join(logs)
    assert f"refused: workdir {workdir} is in use by another run: pid {os.getpid()}" in logs[0]
    assert "(found by process 0)" in logs[1] and "LOCK-HELD" not in "".join(logs)
