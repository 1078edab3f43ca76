"""Config checks against the mesh: mesh shape vs device count, sharded batch sizes vs the batch axis, at parse when the
config decides it and right after the distributed start-up otherwise -- each one message naming the key."""

import os
import pathlib
import subprocess
import sys

import pytest

from spar_jax import config as C
from spar_jax import mesh_check

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _cfg(**overrides):
    c = C.default_config()
    for dotted, value in overrides.items():
        section, leaf = dotted.split("__")
        c[section][leaf] = value
    return c


def test_explicit_batch_axis_is_checked_at_parse():
    with pytest.raises(ValueError, match=r"config key 'engine.batch_size': 30 does not divide .*data=4 x fsdp=1 = 4"):
        C.parse(_cfg(mesh__shape=(4, 1, 1), engine__batch_size=30))


def test_micro_batch_rows_are_checked():
    # 32 / 4 accumulation steps = 8 rows: fine over 4; 32 / 16 = 2 rows: not.
    C.parse(_cfg(mesh__shape=(2, 2, 1), sft__grad_accum_steps=4))
    with pytest.raises(ValueError, match=r"'sft.batch_size': 2 rows \(sft.batch_size / sft.grad_accum_steps=16\)"):
        C.parse(_cfg(mesh__shape=(2, 2, 1), sft__grad_accum_steps=16))


def test_dpo_pairs_without_shared_prompt_are_two_rows():
    # 3 pairs per micro-batch: 3 packed rows do not divide over 2, 6 unpacked rows do.
    with pytest.raises(ValueError, match=r"'dpo.batch_size': 3 does not divide"):
        C.parse(_cfg(mesh__shape=(1, 2, 1), dpo__batch_size=3))
    C.parse(_cfg(mesh__shape=(1, 2, 1), dpo__batch_size=3, dpo__share_prompt=False))


def test_tensor_axis_does_not_split_the_batch():
    C.parse(_cfg(mesh__shape=(1, 1, 4), engine__batch_size=30, dpo__batch_size=3))


def test_unused_training_sections_are_not_checked():
    c = _cfg(mesh__shape=(4, 1, 1), dpo__batch_size=6, sft__batch_size=6, sft0__batch_size=6)
    c.stages, c.eval.ifeval_source = ("ifeval",), "prompts.jsonl"
    C.parse(c)  # no training in an evaluation run
    c = _cfg(mesh__shape=(4, 1, 1), sft0__batch_size=6)
    C.parse(c)  # no Stage-0 SFT without bootstrap or initial SFT data
    c.spar.bootstrap_prompts = 8
    with pytest.raises(ValueError, match=r"'sft0.batch_size': 6 does not divide"):
        C.parse(c)


def test_two_remaining_axes_are_refused_at_parse():
    with pytest.raises(ValueError, match=r"config key 'mesh.shape': at most one entry may be -1"):
        C.parse(_cfg(mesh__shape=(-1, -1, 1)))


def test_device_count_resolves_the_remaining_axis():
    cfg = C.parse(_cfg(mesh__shape=(1, -1, 1), engine__batch_size=24, dpo__batch_size=8, sft__batch_size=8))
    assert mesh_check.validate_against_devices(cfg, 8) == (1, 8, 1)
    with pytest.raises(ValueError, match=r"'engine.batch_size': 24 does not divide .*fsdp=16 = 16.* on 16 devices"):
        mesh_check.validate_against_devices(cfg, 16)
    with pytest.raises(ValueError, match=r"config key 'mesh.shape': mesh shape \[1, -1, 2\] does not divide 3 devices"):
        mesh_check.validate_against_devices(C.parse(_cfg(mesh__shape=(1, -1, 2))), 3)
    with pytest.raises(ValueError, match=r"config key 'mesh.shape': mesh shape \(2, 2, 1\) needs 4 devices but 1"):
        mesh_check.validate_against_devices(C.parse(_cfg(mesh__shape=(2, 2, 1))), 1)


def _main(tmp_path, *overrides, devices=1):
    workdir = tmp_path / "run"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "spar_jax.main", "--config=configs/demo.py", f"--config.workdir={workdir}", *overrides],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc, workdir


def test_entry_point_refuses_a_mesh_the_devices_cannot_fill_before_loading(tmp_path):
    proc, workdir = _main(tmp_path, "--config.mesh.shape=(2,1,1)")
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert lines == ["error: config key 'mesh.shape': mesh shape (2, 1, 1) needs 2 devices but 1 are available"]
    assert "Traceback" not in proc.stderr
    assert not workdir.exists()  # stopped before the workdir was made and anything loaded


def test_entry_point_checks_batches_against_the_devices(tmp_path):
    proc, workdir = _main(tmp_path, "--config.engine.batch_size=6", devices=4)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert (
        "error: config key 'engine.batch_size': 6 does not divide over the batch axis (data=4 x fsdp=1 = 4) of "
        "mesh.shape (-1, 1, 1) on 4 devices" in proc.stderr
    )
    assert not workdir.exists()
