"""The entry point's stage wiring: config -> typed settings -> evaluation outputs."""

import json

import pytest

from spar_jax import main
from spar_jax.config import default_config, parse
from spar_jax.files import SourceUnavailableError
from spar_jax.spar.runtime import DeferredEngine, Runtime

from eval_fakes import IFEVAL_PROMPTS, write_jsonl


def test_ifeval_stage_scores_a_responses_file(tmp_path):
    prompts = IFEVAL_PROMPTS
    source = write_jsonl(tmp_path / "input_data.jsonl", prompts)
    responses = tmp_path / "responses.jsonl"
    with responses.open("w") as f:
        for p in prompts:
            f.write(json.dumps({"prompt": p["prompt"], "response": p["prompt"].lower()}) + "\n")
    c = default_config()
    c.workdir = str(tmp_path / "run")
    c.stages = ("ifeval",)
    c.eval.ifeval_source = str(source)
    c.ifeval.responses_file = str(responses)
    summary = main.run(c)["ifeval"]
    written = json.load(open(tmp_path / "run" / "ifeval" / "summary.json"))
    assert written["metrics"] == summary["metrics"]
    assert written["label"] == "demo" and written["num_prompts"] == len(prompts)
    assert 0.0 < summary["metrics"]["average"] < 1.0


@pytest.mark.parametrize(
    "stage, key", [("ifeval", "eval.ifeval_source"), ("calibration", "eval.ifeval_source"), ("llmbar", "llmbar.source"),
                   ("followbench", "followbench.source")],
)  # fmt: skip
def test_a_missing_input_file_fails_before_any_model_is_loaded(tmp_path, stage, key):
    """An evaluation reads its inputs before it loads a model: a bad path is reported at once, not after a load."""

    def load(role, path, spec):
        raise AssertionError(f"the {role} model was loaded before the stage read its inputs")

    c = default_config()
    c.workdir = str(tmp_path / "run")
    c.stages = (stage,)
    missing = tmp_path / "missing.jsonl"
    section, leaf = key.split(".")
    setattr(c[section], leaf, str(missing))
    with pytest.raises((FileNotFoundError, ValueError, SourceUnavailableError), match="missing.jsonl"):
        main.run(c, runtime=Runtime(parse(c), engine_factory=load))


def test_deferred_engine_loads_once_on_first_use():
    class Engine:
        batch_size = 8

        def generate(self, requests):
            return [r.upper() for r in requests]

    loads = []
    deferred = DeferredEngine(lambda: loads.append(1) or Engine())
    assert not deferred.loaded and loads == []
    assert deferred.generate(["a", "b"]) == ["A", "B"]
    assert deferred.batch_size == 8 and deferred.loaded and loads == [1]


def test_every_configurable_stage_is_registered_with_one_signature():
    """``config.STAGES`` (what a config may name) and the registry main.py dispatches through are the same list, and
    every stage module takes (cfg, runtime)."""
    import inspect

    from spar_jax import config, stages

    assert tuple(stages.REGISTRY) == config.STAGES
    for name, module in stages.REGISTRY.items():
        assert list(inspect.signature(module.run).parameters) == ["cfg", "runtime"], name
    assert set(config.EVAL_STAGES) <= set(stages.REGISTRY)
