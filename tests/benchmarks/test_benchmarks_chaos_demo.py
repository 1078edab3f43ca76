"""benchmarks/chaos_demo.py's comparison: what counts as an artifact of a run and what measures only its process."""

import importlib.util
import json
import pathlib

import numpy as np
from safetensors.numpy import save_file

_SPEC = importlib.util.spec_from_file_location(
    "chaos_demo", pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "chaos_demo.py"
)
C = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(C)


def _run(root: pathlib.Path, *, loss=0.5, speed=10.0, weight=1.0, shard="a\n"):
    step = root / "iter_1" / "actor"
    (step / "hf").mkdir(parents=True)
    done = {
        "loss": loss,
        "checkpoint": str(step / "hf"),
        "seconds": speed * 3,
        "tokens_per_s": speed,
        "step_time_s": 1 / speed,
        "sampling": {"generated_tokens": int(speed)},
    }
    (step / "DONE.json").write_text(json.dumps(done))
    (step / "inputs.json").write_text(json.dumps({"started": speed}))
    save_file({"w": np.full((2, 2), weight, np.float32)}, str(step / "hf" / "model.safetensors"))
    (root / "iter_1" / "mine").mkdir()
    (root / "iter_1" / "mine" / "shard_00000.jsonl").write_text(shard)
    (root / "logs").mkdir()
    (root / "logs" / "run.log").write_text(f"took {speed}")
    return str(root)


def test_process_measurements_and_paths_are_not_compared(tmp_path):
    reference = _run(tmp_path / "reference")
    assert C.compare(reference, _run(tmp_path / "chaos", speed=99.0, weight=1.0 + 1e-7), atol=1e-6) == []


def test_a_changed_artifact_is_named(tmp_path):
    reference = _run(tmp_path / "reference")
    assert C.compare(reference, _run(tmp_path / "a", loss=0.25), atol=1e-6) == ["differs: iter_1/actor/DONE.json"]
    assert C.compare(reference, _run(tmp_path / "b", weight=1.1), atol=1e-6) == [
        "tensors differ: iter_1/actor/hf/model.safetensors"
    ]
    assert C.compare(reference, _run(tmp_path / "c", shard="b\n"), atol=1e-6) == [
        "differs: iter_1/mine/shard_00000.jsonl"
    ]
    (pathlib.Path(reference) / "iter_1" / "mine" / "shard_00001.jsonl").write_text("x\n")
    assert C.compare(reference, _run(tmp_path / "d"), atol=1e-6) == ["only in reference: iter_1/mine/shard_00001.jsonl"]
