"""benchmarks/chaos_demo.py's comparison: what counts as an artifact of a run and what measures only its process."""

import importlib.util
import json
import pathlib
import sys

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


def test_progress_lines_become_markers_without_timings_or_workdir():
    wd = "/runs/after"
    assert C.marker("[04:38:00] iter_0/sft_refiner: done in 4m58s\n", wd) == "iter_0/sft_refiner: done"
    assert C.marker("[04:37:58] after/prompts: start", wd) == "<run>/prompts: start"
    assert C.marker("[04:50:36] iteration 1: report written to /runs/after/report.md", wd) == (
        "iteration 1: report written to <workdir>/report.md"
    )
    assert C.marker("train:  50%|█████     | 1/2 [00:25<00:25]", wd) is None


def test_a_kill_stands_for_progress_not_wall_time():
    reference = [(1.0, "a: start"), (5.0, "a: done"), (5.0, "b: start"), (9.0, "b: done")]
    early = C.kill_at(reference, 0.5)  # before any line: by the clock, or at once past the first line
    assert not early(0.4, []) and early(0.5, []) and early(0.1, [(0.1, "a: start")])
    in_b = C.kill_at(reference, 7.0)  # 2 s after "b: start"
    assert not in_b(30.0, [(0.2, "a: start")])  # a slow attempt still in stage a is not killed
    assert not in_b(20.5, [(19.0, "b: start")]) and in_b(21.0, [(19.0, "b: start")])
    assert in_b(3.0, [(3.0, "b: done")])  # already past the moment's point


def test_an_attempt_is_killed_at_its_marker(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(
        "import sys, time\n"
        "print('[00:00:00] a: start', file=sys.stderr, flush=True)\n"
        "time.sleep(0.5)\n"
        "print('[00:00:01] b: start', file=sys.stderr, flush=True)\n"
        "time.sleep(30)\n"
    )
    command = f"{sys.executable} {script} {{workdir}}"
    out = C.run_once(command, str(tmp_path / "w"), C.kill_at([(0.0, "a: start"), (1.0, "b: start")], 1.2))
    assert out["killed"] and out["killed_after"] == "b: start" and out["seconds"] < 10
    assert [k for _, k in out["markers"]] == ["a: start", "b: start"]
    done = C.run_once(f"{sys.executable} -c pass {{workdir}}", str(tmp_path / "w"))
    assert not done["killed"] and done["exit_code"] == 0 and done["last_line"] is None
