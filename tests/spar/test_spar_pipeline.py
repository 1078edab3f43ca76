"""The SPaR loop end to end on a tiny random model, and kill -9 / resume equivalence."""

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

import spar_pipeline_driver as driver
from tiny_checkpoints import copy_demo_tokenizer, write_checkpoint

SAMPLING_ARTIFACTS = (
    "prompts/train.jsonl",
    "prompts/heldout.jsonl",
    "iter_1/mine/shard_00000.jsonl",
    "iter_1/mine/shard_00001.jsonl",
    "iter_1/data/dpo.jsonl",
    "iter_1/data/refiner_sft.jsonl",
)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    directory = write_checkpoint(
        tmp_path_factory.mktemp("tiny") / "model",
        "llama",
        seed=21,
        vocab_size=49152,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    copy_demo_tokenizer(directory)
    return directory


@pytest.fixture(scope="module")
def uninterrupted(tiny_model, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("run") / "w")
    start = time.time()
    summary = driver.run(workdir, tiny_model)
    return workdir, summary, time.time() - start


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def test_every_stage_ran_and_wrote_its_artifacts(uninterrupted):
    workdir, summary, seconds = uninterrupted
    print(f"pipeline wall time {seconds:.1f}s")
    for stage in (
        "prompts",
        "iter_0/eval",
        "iter_1/mine",
        "iter_1/search",
        "iter_1/data",
        "iter_1/actor",
        "iter_1/refiner",
        "iter_1/eval",
    ):
        assert os.path.exists(os.path.join(workdir, stage, "DONE.json")), stage
    rows = {r["iteration"]: r for r in summary["iterations"]}
    it = rows[1]
    assert it["prompts"] == 6 and it["responses"] == 12 and it["votes"] == 36
    assert it["negatives"] > 0 and it["trees"] == it["negatives"]
    assert it["pairs"] == it["successes"] > 0
    assert it["actor_steps"] == 2 and it["refiner_steps"] == 2
    assert it["main_calls_per_level"] == 2.0  # one refine + one judge call per level, whatever the tree count
    assert "heldout_average" in rows[0] and "heldout_average" in it
    for name in ("report.md", "metrics.jsonl", "metrics.png"):
        assert os.path.getsize(os.path.join(workdir, name)) > 0
    report = open(os.path.join(workdir, "report.md")).read()
    assert "Iteration 1: IFEval not evaluated: could not load IFEval prompts" in report
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(workdir, "tensorboard")))
    # the trained actor is a loadable HF checkpoint and differs from the start
    actor = json.load(open(os.path.join(workdir, "iter_1/actor/DONE.json")))["checkpoint"]
    assert actor.endswith("iter_1/actor/hf") and os.path.exists(os.path.join(actor, "tokenizer.json"))
    # DPO pairs are (refined, root) for successful trees; the refiner mixture holds refinement examples
    pairs = [json.loads(line) for line in open(os.path.join(workdir, "iter_1/data/dpo.jsonl"))]
    assert all(p["chosen"][0]["content"].startswith("refined-") for p in pairs)
    assert all(not p["rejected"][0]["content"].startswith("refined-") for p in pairs)


def test_rerun_of_a_finished_run_does_nothing(uninterrupted, tiny_model):
    workdir, _, _ = uninterrupted
    before = {p: _read(os.path.join(workdir, p)) for p in SAMPLING_ARTIFACTS}
    mtime = os.path.getmtime(os.path.join(workdir, "iter_1/actor/hf/model.safetensors"))
    driver.run(workdir, tiny_model)
    assert {p: _read(os.path.join(workdir, p)) for p in SAMPLING_ARTIFACTS} == before
    assert os.path.getmtime(os.path.join(workdir, "iter_1/actor/hf/model.safetensors")) == mtime


KILL_POINTS = ("iter_1/mine/shard_00000.jsonl", "iter_1/actor/checkpoints/1")  # mid-mining, mid-DPO


def _run_until_killed(workdir, model_dir, kill_when):
    """Run the pipeline in a child process and SIGKILL it as soon as ``kill_when`` exists under ``workdir``."""
    proc = subprocess.Popen(
        [sys.executable, driver.__file__, workdir, model_dir], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.time() + 300
    while not os.path.exists(os.path.join(workdir, kill_when)):
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.time() < deadline, f"the run never reached the kill point {kill_when}"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_killed_twice_and_resumed_equals_uninterrupted(uninterrupted, tiny_model, tmp_path, caplog):
    # One run killed mid-mining, resumed from disk and killed again mid-DPO, then resumed to the end (one run, two
    # kill points, instead of one run per point: each run costs a minute and a half here).
    reference, _, _ = uninterrupted
    workdir = str(tmp_path / "w")
    for kill_when in KILL_POINTS:
        assert not os.path.exists(os.path.join(workdir, kill_when)), "the previous run already passed this point"
        _run_until_killed(workdir, tiny_model, kill_when)
        assert not os.path.exists(os.path.join(workdir, "iter_1/eval/DONE.json"))
    finished = {p: os.stat(os.path.join(workdir, p)).st_mtime_ns for p in SAMPLING_ARTIFACTS[:4]}
    with caplog.at_level(logging.INFO, logger="spar_jax.training.trainer"):
        driver.run(workdir, tiny_model)
    assert {p: os.stat(os.path.join(workdir, p)).st_mtime_ns for p in finished} == finished  # reused, not rewritten
    resumed = [int(m) for m in re.findall(r"iter_1/actor/checkpoints step (\d+)", caplog.text)]
    assert resumed and resumed[0] >= 1, caplog.text[-2000:]  # DPO continued from its checkpoint, not from step 0
    _assert_same_artifacts(workdir, reference)


def _assert_same_artifacts(workdir, reference):
    """Sampling artifacts byte-equal and both exported models equal (1e-6) to the uninterrupted run's."""
    for p in SAMPLING_ARTIFACTS:
        assert _read(os.path.join(workdir, p)) == _read(os.path.join(reference, p)), p
    for model in ("actor", "refiner"):
        a = load_file(os.path.join(workdir, f"iter_1/{model}/hf/model.safetensors"))
        b = load_file(os.path.join(reference, f"iter_1/{model}/hf/model.safetensors"))
        assert sorted(a) == sorted(b)
        for name in a:
            np.testing.assert_allclose(a[name], b[name], atol=1e-6, err_msg=f"{model}: {name}")


def _run_killed_at(workdir, model_dir, point):
    """Run the pipeline in a child process that SIGKILLs itself at ``point`` (see ``driver.install_kill_hook``)."""
    env = {**os.environ, "SPAR_TEST_KILL_AT": point}
    proc = subprocess.run(
        [sys.executable, driver.__file__, workdir, model_dir],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=900,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-3000:]


def test_killed_in_the_final_exports_and_resumed_equals_uninterrupted(uninterrupted, tiny_model, tmp_path, caplog):
    # Killed inside the last training stage's HF export (a weights file half written in the temp sibling), then
    # inside the run's final report (every stage finished); each resume continues, and the end equals a run that was
    # never interrupted.
    reference, _, _ = uninterrupted
    workdir = str(tmp_path / "w")
    _run_killed_at(workdir, tiny_model, "export:iter_1/refiner")
    refiner = os.path.join(workdir, "iter_1", "refiner")
    assert os.path.exists(os.path.join(workdir, "iter_1/actor/DONE.json"))
    assert not os.path.exists(os.path.join(refiner, "DONE.json")) and not os.path.exists(os.path.join(refiner, "hf"))
    assert [n for n in os.listdir(refiner) if n.startswith(".tmp-save-hf-")]
    checkpoints = os.path.join(refiner, "checkpoints")
    saved = {n: os.stat(os.path.join(checkpoints, n)).st_mtime_ns for n in os.listdir(checkpoints) if n.isdigit()}
    assert "2" in saved  # training finished (2 steps) before the export
    finished = {
        p: os.stat(os.path.join(workdir, p)).st_mtime_ns
        for p in (*SAMPLING_ARTIFACTS, "iter_1/actor/hf/model.safetensors")
    }
    _run_killed_at(workdir, tiny_model, "report")
    assert os.path.exists(os.path.join(refiner, "DONE.json")) and not os.path.exists(os.path.join(workdir, "report.md"))
    assert not [n for n in os.listdir(refiner) if n.startswith(".tmp-save-hf-")]  # the killed save's copy is gone
    # The resumed stage restored step 2 and exported it: no step was trained or saved again.
    assert {n: os.stat(os.path.join(checkpoints, n)).st_mtime_ns for n in saved} == saved
    with caplog.at_level(logging.INFO, logger="spar_jax.training.trainer"):
        summary = driver.run(workdir, tiny_model)
    assert not re.findall(r"iter_1/\w+/checkpoints step", caplog.text)  # every training stage finished: none resumed
    assert {p: os.stat(os.path.join(workdir, p)).st_mtime_ns for p in finished} == finished  # reused, not rewritten
    assert os.path.getsize(summary["report"]) > 0 and os.path.exists(os.path.join(workdir, "metrics.jsonl"))
    _assert_same_artifacts(workdir, reference)
