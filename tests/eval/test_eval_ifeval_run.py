"""The IFEval run: generation through the engine API, scoring a responses file, and the files it writes."""

import json

import pytest

from spar_jax.eval import run_ifeval
from spar_jax.eval.run_ifeval import IFEvalRunConfig

from eval_fakes import IFEVAL_PROMPTS, FnEngine, write_jsonl

# key 1 passes (no comma); key 2 fails strict ("Hi" is not lowercase); key 3 passes one of two (has a comma).
ANSWERS = {
    "Say hi without commas.": "Hi there friend",
    "Say hi in lowercase.": "Hi there",
    "Say hi in lowercase, no commas.": "hi, there",
}


def _engine():
    return FnEngine(lambda messages, n: [ANSWERS[messages[0]["content"]]] * n)


def test_generates_greedily_and_writes_every_output(tmp_path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", IFEVAL_PROMPTS)
    engine = _engine()
    out = tmp_path / "out"
    summary = run_ifeval.run(engine, IFEvalRunConfig(prompts_source=str(prompts), max_new_tokens=64, label="base"), out)
    (call,) = engine.calls
    assert call.n == 1 and call.sampling["temperature"] == 0.0 and call.sampling["max_new_tokens"] == 64
    assert [list(r) for r in call.requests] == [[{"role": "user", "content": p["prompt"]}] for p in IFEVAL_PROMPTS]
    m = summary["metrics"]
    assert m["prompt_level_strict"] == pytest.approx(1 / 3)
    assert m["instruction_level_strict"] == pytest.approx(2 / 4)
    assert m["average"] == pytest.approx(sum(m[k] for k in run_ifeval.ifeval.scoring.METRIC_NAMES) / 4)
    assert summary["eval"] == "ifeval" and summary["label"] == "base"
    assert summary["generation"]["finish_reasons"] == {"stop": 3}
    assert summary["generation"]["mean_new_tokens"] == pytest.approx((3 + 2 + 2) / 3)
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["metrics"] == m and on_disk["settings"]["max_new_tokens"] == 64
    responses = [json.loads(line) for line in (out / "responses.jsonl").read_text().splitlines()]
    assert [(r["prompt"], r["response"]) for r in responses] == list(ANSWERS.items())
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["follow_instruction_list_strict"] for r in results] == [[True], [False], [True, False]]
    report = (out / "report.md").read_text()
    assert report.startswith("# IFEval — base") and "| prompt | 33.33 |" in report
    assert "punctuation:no_comma" in report


def test_scores_an_existing_responses_file_without_an_engine(tmp_path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", IFEVAL_PROMPTS)
    generated = run_ifeval.run(_engine(), IFEvalRunConfig(prompts_source=str(prompts)), tmp_path / "gen")
    scored = run_ifeval.run(
        None,
        IFEvalRunConfig(prompts_source=str(prompts), responses_file=str(tmp_path / "gen" / "responses.jsonl")),
        tmp_path / "scored",
    )
    assert scored["metrics"] == generated["metrics"]
    assert scored["generation"] is None and not (tmp_path / "scored" / "responses.jsonl").exists()
    with pytest.raises(ValueError, match="no engine to generate with"):
        run_ifeval.run(None, IFEvalRunConfig(prompts_source=str(prompts)), tmp_path / "x")
    partial = write_jsonl(tmp_path / "partial.jsonl", [{"prompt": "Say hi in lowercase.", "response": "hi"}])
    with pytest.raises(ValueError, match="2 of 3 IFEval prompts have no response"):
        run_ifeval.run(None, IFEvalRunConfig(prompts_source=str(prompts), responses_file=str(partial)), tmp_path / "y")


def test_loads_the_shared_ifeval_copy_and_limits(shared_data):
    source = str(shared_data / "ifeval" / "input_data.jsonl")
    assert len(run_ifeval.load_prompts(IFEvalRunConfig(prompts_source=source))) == 541
    first = run_ifeval.load_prompts(IFEvalRunConfig(prompts_source=source, limit=5))
    assert [p.key for p in first] == [1000, 1001, 1005, 1012, 1019]


def test_generation_resumes_from_the_next_unwritten_shard(tmp_path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", IFEVAL_PROMPTS)
    settings = IFEvalRunConfig(prompts_source=str(prompts), shard_size=2)
    done = run_ifeval.run(_engine(), settings, tmp_path / "full")
    # A run killed after its first shard: only shard 0 (2 prompts) and the plan are on disk.
    (tmp_path / "killed" / "shards").mkdir(parents=True)
    for name in ("plan.json", "shard_00000.jsonl"):
        (tmp_path / "killed" / "shards" / name).write_bytes((tmp_path / "full" / "shards" / name).read_bytes())
    engine = _engine()
    resumed = run_ifeval.run(engine, settings, tmp_path / "killed")
    (call,) = engine.calls
    assert [r[0]["content"] for r in call.requests] == [IFEVAL_PROMPTS[2]["prompt"]]
    assert resumed["metrics"] == done["metrics"]
    assert (tmp_path / "killed" / "responses.jsonl").read_text() == (tmp_path / "full" / "responses.jsonl").read_text()
    with pytest.raises(ValueError, match="produced from other inputs"):
        run_ifeval.run(
            _engine(), IFEvalRunConfig(prompts_source=str(prompts), shard_size=2, max_new_tokens=7), tmp_path / "killed"
        )


def test_settings_are_validated():
    with pytest.raises(ValueError, match="limit must be an int >= 0"):
        IFEvalRunConfig(limit=-1)
    with pytest.raises(ValueError, match="shard_size must be an int >= 1"):
        IFEvalRunConfig(shard_size=0)
    with pytest.raises(ValueError, match="max_new_tokens must be a positive int"):
        IFEvalRunConfig(max_new_tokens=0)
