"""Slot utilization per sampling stage: the engines' counters recorded in a stage's DONE record and the run report's
``utilization_<stage>`` rows, with a real engine over a tiny random model."""

import json
import os

import pytest

from spar_jax import config as config_lib
from spar_jax.spar import report
from spar_jax.spar import stats as S
from spar_jax.spar.pipeline import Pipeline, run_step
from spar_jax.spar.runtime import Runtime

from tiny_checkpoints import write_checkpoint


def test_sampling_use_sums_engines_and_counts_a_new_engine_from_zero():
    before = {1: {"generated_tokens": 10, "decode_slot_steps": 20}}
    after = {1: {"generated_tokens": 40, "decode_slot_steps": 60}, 2: {"generated_tokens": 6, "decode_slot_steps": 8}}
    use = S.sampling_use(before, after)
    assert use == {"generated_tokens": 36, "decode_slot_steps": 48, "utilization": 0.75}
    assert S.sampling_use(after, after) is None  # nothing decoded in between: no record


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from spar_jax.models import from_pretrained
    from spar_jax.sampling import Engine

    directory = write_checkpoint(tmp_path_factory.mktemp("tiny") / "model", "llama", seed=3)
    return Engine(
        from_pretrained(directory), None, batch_size=4, batching="static", eos_token_ids=[5, 6, 7, 8], progress=False
    )


def test_a_sampling_stage_records_its_engines_utilization_and_the_report_shows_it(engine, tmp_path):
    cfg = config_lib.parse(config_lib.default_config())
    runtime = Runtime(cfg, engine_factory=lambda role, path, spec: engine)
    pipeline = Pipeline(cfg, runtime)
    prompts = [[3 + i, 10 + i, 20 + 2 * i] for i in range(6)]
    runtime.engine("actor", "tiny")  # loaded before the stage: only the stage's own work counts
    engine.generate([[9, 9]], max_new_tokens=4, temperature=1.0, seed=0)
    start = dict(vars(engine.stats))

    def stage():
        results = runtime.engine("actor", "tiny").generate(prompts, max_new_tokens=24, temperature=1.0, n=2, seed=1)
        return {"samples": sum(len(r.completions) for r in results)}

    directory = os.path.join(str(tmp_path), "iter_1", "eval")
    info = run_step(directory, pipeline.sampling(stage))
    tokens = engine.stats.generated_tokens - start["generated_tokens"]
    slot_steps = engine.stats.decode_slot_steps - start["decode_slot_steps"]
    assert 0 < tokens < slot_steps  # sampled rows stop at different lengths: some slot-steps idle
    with open(os.path.join(directory, "DONE.json")) as f:
        done = json.load(f)
    assert done["samples"] == 12 == info["samples"]
    assert done["sampling"]["generated_tokens"] == tokens and done["sampling"]["decode_slot_steps"] == slot_steps
    assert done["sampling"]["calls"] == 1
    row = report.iteration_row(str(tmp_path), 1)
    assert row["utilization_eval"] == pytest.approx(tokens / slot_steps, abs=1e-4)
    assert row["generated_tokens_eval"] == tokens
    assert "utilization_search" not in row
    text = report.render([row])
    assert "| utilization_eval |" in text and "decode slot-steps" in text


def test_scripted_engines_without_statistics_leave_no_record(tmp_path):
    from spar_fakes import ScriptedEngine

    cfg = config_lib.parse(config_lib.default_config())
    scripted = ScriptedEngine(actor=lambda instruction, n: ["x"] * n)
    runtime = Runtime(cfg, engine_factory=lambda role, path, spec: scripted)
    runtime.engine("actor", "p")
    info = Pipeline(cfg, runtime).sampling(lambda: {"done": True})()
    assert info == {"done": True}
