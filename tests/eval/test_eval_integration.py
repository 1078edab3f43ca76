"""Integration: the IFEval run on the real demo model through ``spar_jax.sampling.Engine``."""

import json

import pytest

from spar_jax.eval import run_ifeval
from spar_jax.eval.run_ifeval import IFEvalRunConfig

from eval_fakes import IFEVAL_PROMPTS, write_jsonl

MAX_NEW = 16


@pytest.fixture(scope="module")
def engine(demo_dir):
    from spar_jax.models import from_pretrained, load_tokenizer
    from spar_jax.sampling import Engine

    return Engine(from_pretrained(demo_dir), load_tokenizer(demo_dir), batch_size=4, progress=False)


def test_ifeval_run_on_the_demo_model(engine, tmp_path):
    source = str(write_jsonl(tmp_path / "input_data.jsonl", IFEVAL_PROMPTS))
    summary = run_ifeval.run(
        engine,
        IFEvalRunConfig(prompts_source=source, limit=3, max_new_tokens=MAX_NEW, label="demo"),
        tmp_path / "ifeval",
    )
    records = [json.loads(s) for s in (tmp_path / "ifeval" / "responses.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(r["response"].strip() for r in records)
    for r in records:
        assert r["finish_reason"] in ("stop", "length") and 0 < r["num_tokens"] <= MAX_NEW
        assert r["finish_reason"] == "stop" or r["num_tokens"] == MAX_NEW
    assert all(0.0 <= v <= 1.0 for v in summary["metrics"].values()) and summary["num_prompts"] == 3
    rescored = run_ifeval.run(
        None,
        IFEvalRunConfig(prompts_source=source, limit=3, responses_file=str(tmp_path / "ifeval" / "responses.jsonl")),
        tmp_path / "rescored",
    )
    assert rescored["metrics"] == summary["metrics"]
