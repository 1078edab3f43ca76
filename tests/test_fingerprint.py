"""Stage fingerprints: a workdir never mixes runs. Changed model / seed / template stops with exit code 2 naming the
key and the stage; ``on_change=rerun`` reruns exactly the affected stages; eval stages refuse another model's cache.

The SPaR loop here runs with scripted engines and a recording trainer (the real trainer is covered by
test_spar_pipeline.py), so each run takes well under a second.
"""

import json
import os
import subprocess
import sys

import pytest

from spar_jax import fingerprint
from spar_jax.config import parse
from spar_jax.eval import run_ifeval
from spar_jax.eval.run_ifeval import IFEvalRunConfig
from spar_jax.fingerprint import InputsChangedError
from spar_jax.spar.pipeline import Pipeline

import spar_pipeline_driver as driver
from eval_fakes import IFEVAL_PROMPTS, FnEngine, write_jsonl
from spar_pipeline_driver import fake_checkpoint

STAGES = (
    "prompts",
    "iter_0/eval",
    "iter_1/mine",
    "iter_1/search",
    "iter_1/data",
    "iter_1/actor",
    "iter_1/refiner",
    "iter_1/eval",
    "iter_2/mine",
    "iter_2/search",
    "iter_2/data",
    "iter_2/actor",
    "iter_2/refiner",
    "iter_2/eval",
)


def config(workdir, model, **overrides):
    c = driver.make_config(str(workdir), str(model))
    c.spar.iterations = 2
    c.eval.ifeval_source = ""
    for key, value in overrides.items():
        section, _, leaf = key.rpartition(".")
        (c[section] if section else c)[leaf] = value
    return c


def run(workdir, model, **overrides):
    cfg = parse(config(workdir, model, **overrides))
    runtime = driver.scripted_runtime(cfg)
    Pipeline(cfg, runtime).run()
    return runtime


def mtimes(workdir):
    out = {}
    for stage in STAGES:
        for root, _, files in os.walk(os.path.join(workdir, stage)):
            for name in files:
                out[os.path.relpath(os.path.join(root, name), workdir)] = os.stat(os.path.join(root, name)).st_mtime_ns
    return out


@pytest.fixture()
def finished(tmp_path):
    model = fake_checkpoint(tmp_path / "model")
    workdir = tmp_path / "w"
    run(workdir, model)
    return workdir, model


def test_every_stage_records_its_inputs_and_a_rerun_reuses_everything(finished):
    workdir, model = finished
    for stage in STAGES:
        done = json.load(open(workdir / stage / "DONE.json"))
        assert done["inputs"] == json.load(open(workdir / stage / "inputs.json"))["values"], stage
    mine = json.load(open(workdir / "iter_1/mine/DONE.json"))["inputs"]
    assert mine["model.actor.path"] == os.path.abspath(model) and mine["seed"] == 5 and mine["templates"] != "default"
    assert json.load(open(workdir / "iter_2/mine/DONE.json"))["inputs"]["model.actor.path"] == "iter_1/actor/hf"
    before = mtimes(workdir)
    again = run(workdir, model)
    assert not again.trained and not again.engines["actor"].calls and not again.engines["refiner"].calls
    assert mtimes(workdir) == before  # no finished stage or shard was rewritten


@pytest.mark.parametrize("change, key, stage", [
    ({"seed": 6}, "seed", "prompts"),
    ({"mining.k_votes": 2}, "mining.k_votes", "iter_1/mine"),
    ({"search.branch": 2}, "search.branch", "iter_1/search"),
    ({"dpo.learning_rate": 1e-3}, "dpo.learning_rate", "iter_1/actor"),
])  # fmt: skip
def test_a_changed_setting_stops_before_anything_runs(finished, change, key, stage):
    workdir, model = finished
    before = mtimes(workdir)
    with pytest.raises(InputsChangedError, match=rf"stage '{stage}' changed since it ran: {key} \(was"):
        run(workdir, model, **change)
    assert mtimes(workdir) == before


def test_another_model_or_template_stops_naming_the_key(finished, tmp_path):
    workdir, model = finished
    with pytest.raises(InputsChangedError, match=r"stage 'iter_0/eval' .*model\.actor\.path"):
        run(workdir, fake_checkpoint(tmp_path / "other"))
    fake_checkpoint(model, hidden=16)  # same path, other weights
    with pytest.raises(InputsChangedError, match=r"stage 'iter_0/eval' .*model\.actor\.content"):
        run(workdir, model)
    fake_checkpoint(model)
    templates = json.load(open(workdir / "templates.json"))
    json.dump(templates, open(tmp_path / "same.json", "w"))
    assert not run(workdir, model, **{"spar.templates_file": str(tmp_path / "same.json")}).trained  # contents count
    templates["judge"] = templates["judge"] + " "
    json.dump(templates, open(tmp_path / "edited.json", "w"))
    with pytest.raises(InputsChangedError, match=r"stage 'iter_1/mine' changed since it ran: templates"):
        run(workdir, model, **{"spar.templates_file": str(tmp_path / "edited.json")})


def test_on_change_rerun_reruns_exactly_the_affected_stages(finished):
    workdir, model = finished
    before = mtimes(workdir)
    runtime = run(workdir, model, **{"search.branch": 2, "on_change": "rerun"})
    after = mtimes(workdir)
    kept = [s for s in STAGES if all(after.get(p) == t for p, t in before.items() if p.startswith(s + "/"))]
    assert kept == ["prompts", "iter_0/eval", "iter_1/mine"]
    assert runtime.trained == ["iter_1/actor", "iter_1/refiner", "iter_2/actor", "iter_2/refiner"]
    assert json.load(open(workdir / "iter_1/search/DONE.json"))["inputs"]["search.branch"] == 2
    assert run(workdir, model, **{"search.branch": 2}).trained == []  # and the new run is now the reference


def test_config_json_is_kept_and_the_new_one_written_beside_it(finished):
    workdir, model = finished
    first = (workdir / "config.json").read_text()
    run(workdir, model, **{"engine.batch_size": 4})  # a setting that shapes no artifact: reused
    assert (workdir / "config.json").read_text() == first
    assert json.load(open(workdir / "config.latest.json"))["engine"]["batch_size"] == 4


def test_ifeval_generations_are_keyed_by_the_model(tmp_path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", IFEVAL_PROMPTS)
    settings = IFEvalRunConfig(prompts_source=str(prompts), shard_size=2)
    engine = FnEngine(lambda messages, n: ["hi"] * n)
    for name in ("a", "b"):
        fake_checkpoint(tmp_path / name)

    def inputs(name, on_change="stop"):
        cfg = parse(config(tmp_path / "w", tmp_path / name, on_change=on_change))
        return fingerprint.stage_inputs(cfg, "ifeval", models={"actor": cfg.actor.path})

    run_ifeval.run(engine, settings, tmp_path / "out", inputs=inputs("a"))
    with pytest.raises(InputsChangedError, match=r"changed inputs model\.actor\.path"):
        run_ifeval.run(engine, settings, tmp_path / "out", inputs=inputs("b"))
    calls = len(engine.calls)
    run_ifeval.run(engine, settings, tmp_path / "out", inputs=inputs("b", "rerun"))
    assert len(engine.calls) > calls  # model b's answers generated, none of a's reused


def test_the_entry_point_exits_2_naming_the_changed_key(tmp_path):
    from spar_jax import main
    from spar_jax.config import default_config

    prompts = write_jsonl(tmp_path / "prompts.jsonl", IFEVAL_PROMPTS)
    responses = write_jsonl(tmp_path / "r.jsonl", [{"prompt": p["prompt"], "response": "hi"} for p in IFEVAL_PROMPTS])
    cfg_file = tmp_path / "cfg.py"
    cfg_file.write_text(
        "from spar_jax.config import default_config\n\ndef get_config():\n    c = default_config()\n"
        f"    c.workdir = {str(tmp_path / 'w')!r}\n    c.stages = ('ifeval',)\n"
        f"    c.eval.ifeval_source = {str(prompts)!r}\n    c.ifeval.responses_file = {str(responses)!r}\n"
        "    return c\n"
    )
    c = default_config()
    c.workdir, c.stages = str(tmp_path / "w"), ("ifeval",)
    c.eval.ifeval_source, c.ifeval.responses_file = str(prompts), str(responses)
    main.run(c)
    changed = subprocess.run(
        [sys.executable, "-m", "spar_jax.main", f"--config={cfg_file}", "--config.ifeval.limit=2"],
        capture_output=True,
        text=True,
    )
    assert changed.returncode == 2
    assert "stage 'ifeval' changed since it ran: ifeval.limit (was 0, now 2)" in changed.stderr
    errors = [line for line in changed.stderr.splitlines() if "stage ifeval" not in line]  # not the progress line
    assert len(errors) == 1 and errors[0].startswith("error:") and "Traceback" not in changed.stderr
    later = tmp_path / "w" / "iter_1" / "mine"  # a stage started after the evaluation: not the evaluation's consumer
    later.mkdir(parents=True)
    (later / "inputs.json").write_text(json.dumps({"values": {}, "started": 2**62}))
    c.ifeval.limit, c.on_change = 2, "rerun"
    assert main.run(c)["ifeval"]["num_prompts"] == 2
    assert (later / "inputs.json").exists()  # an evaluation's rerun deletes the evaluation alone


def test_model_identity():
    assert fingerprint.model_identity("demo") == {"path": "demo"}
    assert fingerprint.model_identity("/w/iter_1/actor/hf", "/w") == {"path": "iter_1/actor/hf", "content": "workdir"}
