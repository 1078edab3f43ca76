"""The entry point's stage wiring: config -> typed settings -> evaluation outputs."""

import json

from spar_jax import main
from spar_jax.config import default_config


def test_ifeval_stage_scores_a_responses_file(tmp_path, shared_data):
    prompts = [json.loads(line) for line in (shared_data / "ifeval" / "input_data.jsonl").open()][:20]
    responses = tmp_path / "responses.jsonl"
    with responses.open("w") as f:
        for p in prompts:
            f.write(json.dumps({"prompt": p["prompt"], "response": p["prompt"].lower()}) + "\n")
    c = default_config()
    c.workdir = str(tmp_path / "run")
    c.stages = ("ifeval",)
    c.ifeval.prompts_source = str(shared_data / "ifeval" / "input_data.jsonl")
    c.ifeval.limit = 20
    c.ifeval.responses_file = str(responses)
    summary = main.run(c)["ifeval"]
    written = json.load(open(tmp_path / "run" / "ifeval" / "summary.json"))
    assert written["metrics"] == summary["metrics"]
    assert written["label"] == "demo" and written["num_prompts"] == 20
    assert 0.0 < summary["metrics"]["average"] < 1.0
