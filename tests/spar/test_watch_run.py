"""A run you can watch: stage and shard progress lines, the report rewritten after every iteration, W&B offline."""

import glob
import json
import logging
import os
import re
import struct

import pytest

from spar_jax import progress
from spar_jax.config import default_config, parse
from spar_jax.resumable import sharded
from spar_jax.spar import pipeline as P

LINE = re.compile(r"^\[\d\d:\d\d:\d\d\] ")


def _lines(err: str) -> list[str]:
    out = [ln for ln in err.splitlines() if LINE.match(ln)]
    return [LINE.sub("", ln) for ln in out]


def test_stage_and_shard_lines_with_elapsed_and_eta(tmp_path, capfd):
    directory = str(tmp_path / "iter_1" / "mine")
    os.makedirs(directory)
    sharded(directory, list(range(5)), 2, lambda items, s: [{"x": i} for i in items], keys=list(range(5)))
    os.remove(os.path.join(directory, "shard_00001.jsonl"))
    os.remove(os.path.join(directory, "shard_00002.jsonl"))
    with open(os.path.join(directory, "shard_00000.timing"), "w") as f:  # the kept shard took 30 s before the kill
        json.dump({"seconds": 30.0, "finished": 1.0}, f)
    capfd.readouterr()

    def stage():
        records = sharded(directory, list(range(5)), 2, lambda items, s: [{"x": i} for i in items], keys=list(range(5)))
        return {"records": len(records)}

    assert P.run_step(directory, stage)["records"] == 5
    lines = _lines(capfd.readouterr().err)
    assert lines[0] == "iter_1/mine: start"
    assert lines[1] == "iter_1/mine: 5 items in 3 shards of 2, 1 already done"
    assert lines[2] == "iter_1/mine shard 2/3 (2 items): start"
    assert re.fullmatch(r"iter_1/mine shard 2/3: done in \d+\.\d s; elapsed \d+\.\d s, ETA \d+\.\d s", lines[3])
    assert lines[4] == "iter_1/mine shard 3/3 (1 items): start"
    assert re.fullmatch(r"iter_1/mine shard 3/3: done in .*; elapsed .*, ETA 0\.0 s", lines[5])
    assert re.fullmatch(r"iter_1/mine: done in \d+\.\d s \(30\.\d s with earlier attempts\)", lines[6])
    assert len(lines) == 7
    P.run_step(directory, stage)  # finished: no lines
    assert _lines(capfd.readouterr().err) == []


class _Killed(Exception):
    pass


def test_a_resumed_step_counts_the_shards_earlier_attempts_finished(tmp_path, monkeypatch, capfd):
    """A step's ``seconds`` is its wall time over attempts: the shards a killed attempt finished are counted (their
    recorded time), the shard it lost is not; shards of other inputs deleted on rerun and copies made by evaluation
    reuse are not either."""
    from spar_jax.resumable import seconds_before
    from spar_jax.spar import evaluation

    now = [1000.0]
    monkeypatch.setattr(P.time, "time", lambda: now[0])
    directory = str(tmp_path / "iter_1" / "search")
    items = list(range(6))

    def stage(kill_at=None):
        def fn(shard, s):
            if s == kill_at:
                now[0] += 50.0  # lost with the kill
                raise _Killed
            now[0] += 10.0 * (s + 1)  # shard s takes 10 (s + 1) seconds
            return [{"x": i} for i in shard]

        return lambda: {"records": len(sharded(directory, items, 2, fn, keys=items))}

    with pytest.raises(_Killed):
        P.run_step(directory, stage(kill_at=2))  # shards 1 (10 s) and 2 (20 s) finish, shard 3 is lost
    now[0] += 100.0  # the restart
    capfd.readouterr()
    info = P.run_step(directory, stage())
    assert info["records"] == 6
    assert info["seconds_earlier_attempts"] == 30.0
    assert info["seconds"] == 30.0 + 30.0  # this attempt ran shard 3 (30 s)
    assert _lines(capfd.readouterr().err)[-1] == "iter_1/search: done in 30.0 s (1m00s with earlier attempts)"

    # An uninterrupted step records its own time only.
    fresh = str(tmp_path / "iter_2" / "search")

    def one_shard(shard, s):
        now[0] += 5.0
        return [{"x": 1}]

    info = P.run_step(fresh, lambda: {"records": len(sharded(fresh, [1], 1, one_shard, keys=[1]))})
    assert info["seconds"] == 5.0 and "seconds_earlier_attempts" not in info

    # Evaluation reuse copies a twin's shards but not their times; shards another attempt deleted are not counted.
    twin_copy = str(tmp_path / "iter_3" / "eval")
    evaluation.reuse(directory, twin_copy, str(tmp_path))
    assert glob.glob(os.path.join(twin_copy, "shard_*.jsonl")) and not glob.glob(os.path.join(twin_copy, "*.timing"))
    assert seconds_before(directory, now[0] + 1) == 60.0
    for path in glob.glob(os.path.join(directory, "shard_*")):
        os.remove(path)
    assert seconds_before(directory, now[0] + 1) == 0.0


def test_shard_clock_eta_is_the_mean_shard_time_times_the_shards_left(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(progress.time, "time", lambda: now[0])
    clock = progress.ShardClock(total=10, skipped=2)
    now[0] = 130.0
    assert clock.done() == "elapsed 30.0 s, ETA 3m30s"  # 30 s per shard, 7 left
    now[0] = 190.0
    assert clock.done() == "elapsed 1m30s, ETA 4m30s"  # 45 s per shard, 6 left
    assert progress.duration(7260) == "2h01m"


def test_transformers_no_torch_advice_is_filtered(caplog):
    import spar_jax  # noqa: F401  (installs the filter)

    logger = logging.getLogger("transformers")
    with caplog.at_level(logging.WARNING, logger="transformers"):
        logger.warning("PyTorch was not found. Models won't be available and only tokenizers, ... can be used.")
        logger.warning("another warning")
    assert [r.getMessage() for r in caplog.records] == ["another warning"]


class _Runtime:
    def release(self):
        pass


def _scripted_pipeline(workdir, iterations, **logging_keys):
    """The loop with every stage replaced by a DONE record of made-up statistics (the loop's order is real)."""
    c = default_config()
    c.workdir = workdir
    c.spar.iterations = iterations
    for k, v in logging_keys.items():
        c.logging[k] = v
    pipe = P.Pipeline(parse(c), _Runtime())
    pipe.prompts = lambda: ([{"key": k, "prompt": f"p{k}"} for k in range(iterations)], [])
    pipe.mine = lambda it, prompts, actor, refiner: []
    pipe.search = lambda it, mined, refiner: []
    pipe.data = lambda it, trees, mined: {"pairs": 0, "refiner_examples": 0}
    pipe.train = lambda it, name, kind, data, init, *a, **k: init
    pipe.evaluate = lambda it, actor, heldout, **kw: P.run_step(
        pipe.path(f"iter_{it}", "eval"), lambda: {"heldout": {"average": 0.25 * it}}
    )
    return pipe


def test_the_report_is_rewritten_after_every_iteration(tmp_path, monkeypatch):
    from spar_jax.spar import publish

    seen = []
    original = publish.after_iteration

    def spy(cfg, it):
        out = original(cfg, it)
        seen.append(
            (
                it,
                open(os.path.join(cfg.workdir, "report.md")).read(),
                [json.loads(x) for x in open(os.path.join(cfg.workdir, "metrics.jsonl"))],
                sorted(os.listdir(os.path.join(cfg.workdir, "tensorboard"))),
                os.path.getsize(os.path.join(cfg.workdir, "metrics.png")),
            )
        )
        return out

    monkeypatch.setattr(publish, "after_iteration", spy)
    _scripted_pipeline(str(tmp_path / "w"), 2).run()
    assert [s[0] for s in seen] == [1, 2]
    _, report1, metrics1, tb1, png1 = seen[0]
    assert "| iter 0 | iter 1 |" in report1 and "iter 2" not in report1
    assert [r["heldout_average"] for r in metrics1] == [0.0, 0.25]
    assert len(tb1) == 1 and tb1[0].startswith("events.out.tfevents") and png1 > 0
    _, report2, metrics2, tb2, _ = seen[1]
    assert "| iter 0 | iter 1 | iter 2 |" in report2
    assert [r["heldout_average"] for r in metrics2] == [0.0, 0.25, 0.5]
    assert len(tb2) == 1  # one fresh event file, not an appended second one


def _wandb_history(workdir):
    """History records of W&B offline run files (LevelDB-style log blocks holding wandb Record protos)."""
    from wandb.proto import wandb_internal_pb2 as pb

    rows = []
    runs = glob.glob(os.path.join(workdir, "wandb", "offline-run-*", "run-*.wandb"))
    for path in sorted(runs, key=os.path.getmtime):  # in the order the runs ran (two can start in one second)
        data, pos, block, buf = open(path, "rb").read(), 7, 32768, b""  # 7 bytes: the file's W&B header
        while pos + 7 <= len(data):
            left = block - pos % block
            _, length, kind = struct.unpack("<IHB", data[pos : pos + 7]) if left >= 7 else (0, 0, 0)
            if left < 7 or (kind == 0 and length == 0):  # block trailer / padding
                pos += left
                continue
            buf += data[pos + 7 : pos + 7 + length]
            pos += 7 + length
            if kind in (1, 4):  # a full record, or the last fragment of one
                record = pb.Record()
                record.ParseFromString(buf)
                buf = b""
                if record.WhichOneof("record_type") == "history":
                    rows.append(
                        {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
                    )
    return rows


def test_wandb_offline_logs_each_iteration_once(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="the optional wandb extra is not installed")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    workdir = str(tmp_path / "w")
    _scripted_pipeline(workdir, 2, wandb_project="spar-test").run()
    _scripted_pipeline(workdir, 2, wandb_project="spar-test").run()  # a rerun logs nothing twice
    history = _wandb_history(workdir)
    assert [(h["_step"], h["spar/heldout_average"]) for h in history] == [(0, 0.0), (1, 0.25), (2, 0.5)]
    state = json.load(open(os.path.join(workdir, "wandb_state.json")))
    assert state["logged"] == [0, 1, 2]
