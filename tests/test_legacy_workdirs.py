"""Workdirs made before stage fingerprints (no inputs.json, DONE.json / plan.json without inputs): adopted with a
warning naming the workdir when config.json has this run's settings for a stage, which records the fingerprint now;
otherwise the run stops (exit code 2 from the entry point) as for a changed input.

The SPaR loop runs with scripted engines and a recording trainer (as in test_fingerprint.py).
"""

import json
import logging
import os

import pytest
from test_fingerprint import STAGES, config, mtimes, run

from spar_jax import fingerprint
from spar_jax.config import parse
from spar_jax.eval import run_ifeval
from spar_jax.eval.run_ifeval import IFEvalRunConfig
from spar_jax.fingerprint import InputsChangedError

from eval_fakes import IFEVAL_PROMPTS, FnEngine, write_jsonl
from spar_pipeline_driver import fake_checkpoint


def make_legacy(workdir) -> dict[str, dict]:
    """Strip every fingerprint from ``workdir`` as an older version wrote it (file mtimes kept); returns the
    stripped stages' recorded inputs."""
    recorded = {}
    for root, _, files in os.walk(workdir):
        if "inputs.json" in files:
            recorded[os.path.relpath(root, workdir)] = json.load(open(os.path.join(root, "inputs.json")))["values"]
            os.unlink(os.path.join(root, "inputs.json"))
        for name in ("DONE.json", "plan.json"):
            if name in files:
                path = os.path.join(root, name)
                stat = os.stat(path)
                record = json.load(open(path))
                record.pop("inputs", None)
                json.dump(record, open(path, "w"))
                os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    return recorded


@pytest.fixture()
def legacy(tmp_path):
    model = fake_checkpoint(tmp_path / "model")
    workdir = tmp_path / "w"
    run(workdir, model)
    recorded = make_legacy(workdir)
    assert set(recorded) == set(STAGES)
    return workdir, model, recorded


def _unchanged(before, after):
    return {p: t for p, t in after.items() if p in before} == before


def test_matching_config_adopts_every_stage_and_records_its_inputs(legacy, caplog):
    workdir, model, recorded = legacy
    before = mtimes(workdir)
    with caplog.at_level(logging.WARNING, logger="spar_jax.fingerprint"):
        again = run(workdir, model)
    assert not again.trained and not again.engines["actor"].calls and not again.engines["refiner"].calls
    assert _unchanged(before, mtimes(workdir))  # no artifact rewritten
    adopted = [r.getMessage() for r in caplog.records if "made before stage fingerprints" in r.getMessage()]
    assert len(adopted) == len(STAGES) and all(m.startswith(f"{workdir}: stage ") for m in adopted)
    assert "stage 'iter_1/search' was made before stage fingerprints; config.json has this run's values" in "\n".join(
        adopted
    )
    for stage in STAGES:
        assert json.load(open(workdir / stage / "inputs.json"))["values"] == recorded[stage], stage
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="spar_jax.fingerprint"):
        assert not run(workdir, model).trained
    assert not [r for r in caplog.records if "before stage fingerprints" in r.getMessage()]  # adopted once


def test_a_half_finished_legacy_stage_is_adopted_and_resumed(legacy):
    workdir, model, _ = legacy
    os.unlink(workdir / "iter_2" / "refiner" / "DONE.json")
    assert run(workdir, model).trained == ["iter_2/refiner"]
    assert json.load(open(workdir / "iter_2/refiner/DONE.json"))["inputs"]["model.refiner.path"] == "iter_1/refiner/hf"


def test_another_config_stops_at_the_first_affected_stage(legacy):
    workdir, model, _ = legacy
    before = mtimes(workdir)
    with pytest.raises(
        InputsChangedError,
        match=(
            rf"^{workdir}: stage 'iter_1/search' was made before stage fingerprints, and the workdir's config.json "
            r"differs from this run in its settings: search.branch \(was 3, now 2\)"
        ),
    ):
        run(workdir, model, **{"search.branch": 2})
    assert _unchanged(before, mtimes(workdir))
    assert not (workdir / "iter_1/search/inputs.json").exists()
    rerun = run(workdir, model, **{"search.branch": 2, "on_change": "rerun"})
    assert rerun.trained == ["iter_1/actor", "iter_1/refiner", "iter_2/actor", "iter_2/refiner"]
    after = mtimes(workdir)
    assert all(after[p] == t for p, t in before.items() if p.startswith(("prompts/", "iter_0/", "iter_1/mine/")))


def test_no_config_json_stops(legacy):
    workdir, model, _ = legacy
    os.unlink(workdir / "config.json")
    os.unlink(workdir / "config.latest.json") if (workdir / "config.latest.json").exists() else None
    os.makedirs(workdir / "x", exist_ok=True)
    cfg = parse(config(workdir, model))
    inputs = fingerprint.stage_inputs(cfg, "prompts")
    with pytest.raises(
        InputsChangedError,
        match=r"stage 'prompts' was made before stage fingerprints, and the "
        r"workdir has no readable config.json",
    ):
        fingerprint.decide(str(workdir / "prompts"), inputs)


def test_a_legacy_ifeval_run_is_adopted_or_refused(tmp_path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", IFEVAL_PROMPTS)
    settings = IFEvalRunConfig(prompts_source=str(prompts), shard_size=2)
    engine = FnEngine(lambda messages, n: ["hi"] * n)
    model, workdir = fake_checkpoint(tmp_path / "model"), tmp_path / "w"

    def stage(limit=0):
        c = config(workdir, model)
        c.stages, c.ifeval.limit, c.eval.ifeval_source = ("ifeval",), limit, str(prompts)
        cfg = parse(c)
        inputs = fingerprint.stage_inputs(cfg, "ifeval", models={"actor": cfg.actor.path})
        return cfg, inputs, os.path.join(workdir, "ifeval")

    cfg, inputs, out = stage()
    fingerprint.decide(out, inputs)  # as the entry point does
    run_ifeval.run(engine, settings, out, inputs=inputs)
    calls = len(engine.calls)
    fingerprint.check_config(str(workdir), cfg.raw)  # the config.json an older run left
    make_legacy(workdir)
    shards = {
        n: os.stat(os.path.join(out, "shards", n)).st_mtime_ns
        for n in os.listdir(os.path.join(out, "shards"))
        if n.startswith("shard_")
    }
    with pytest.raises(InputsChangedError, match=r"stage 'ifeval' was made before .* ifeval.limit \(was 0, now 1\)"):
        fingerprint.decide(out, stage(limit=1)[1])
    assert not fingerprint.decide(out, inputs)  # adopted, to run (the IFEval run writes no DONE.json)
    run_ifeval.run(engine, settings, out, inputs=inputs)
    assert len(engine.calls) == calls  # every cached answer reused
    assert {n: os.stat(os.path.join(out, "shards", n)).st_mtime_ns for n in shards} == shards
    assert json.load(open(os.path.join(out, "shards", "plan.json")))["inputs"] == inputs.values


@pytest.mark.parametrize("recorded, adopted", [("p.jsonl", True), ("other.jsonl", False)])
def test_an_older_record_of_the_replaced_ifeval_key_is_compared_with_eval_ifeval_source(tmp_path, recorded, adopted):
    """A workdir whose config.json predates the shared key records the prompts as ifeval.prompts_source."""
    from spar_jax.config import default_config

    workdir = tmp_path / "w"
    os.makedirs(workdir / "ifeval" / "shards")
    (workdir / "ifeval" / "shards" / "shard_00000.jsonl").write_text("{}\n")
    c = default_config()
    c.workdir, c.stages, c.eval.ifeval_source = str(workdir), ("ifeval",), "p.jsonl"
    cfg = parse(c)
    old = json.loads(json.dumps(cfg.raw))
    old["eval"]["ifeval_source"] = ""  # the older layout: the stage's own key, the loop's key unset
    old["ifeval"]["prompts_source"] = recorded
    (workdir / "config.json").write_text(json.dumps(old))
    inputs = fingerprint.stage_inputs(cfg, "ifeval")
    if adopted:
        assert not fingerprint.decide(str(workdir / "ifeval"), inputs)  # adopted, to resume
    else:
        with pytest.raises(InputsChangedError, match=r"ifeval.prompts_source \(was 'other.jsonl', now 'p.jsonl'\)"):
            fingerprint.decide(str(workdir / "ifeval"), inputs)
