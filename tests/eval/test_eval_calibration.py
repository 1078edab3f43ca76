"""Judge calibration: metric arithmetic on a hand-made set, and runs through the SPaR judging path."""

import json

import pytest

from spar_jax.eval import calibration
from spar_jax.eval.calibration import CalibrationConfig, calibration_metrics
from spar_jax.judge.settings import JudgeConfig
from spar_jax.judge.templates import judge_messages
from spar_jax.judge.votes import Judgement

from eval_fakes import IFEVAL_PROMPTS, write_json, write_jsonl
from spar_fakes import TEMPLATES, ScriptedEngine, vote_text

_VOTE = {"y": "yes", "n": "no", "x": None}


def _judgement(pattern):
    return Judgement(tuple(pattern), tuple(_VOTE[c] for c in pattern))


def test_confusion_matrix_rates_and_vote_agreement_by_hand():
    truth = [True, True, False, False, False, False]
    judgements = [_judgement(p) for p in ("yyyyn", "nnnyy", "nnnnn", "nnyyx", "yyynx", "nnyxx")]
    stats = calibration_metrics(truth, judgements)
    # tn, fp, tp, tie, fn, tp  ("No" is the positive class)
    assert stats["confusion"] == {"tp": 2, "fp": 1, "fn": 1, "tn": 1}
    m = stats["metrics"]
    assert m["accuracy"] == pytest.approx(3 / 5) and m["accuracy_all"] == pytest.approx(3 / 6)
    assert m["no_precision"] == pytest.approx(2 / 3) and m["no_recall"] == pytest.approx(2 / 3)
    assert m["no_f1"] == pytest.approx(2 / 3)
    assert m["vote_accuracy"] == pytest.approx(16 / 26)  # valid votes equal to the truth
    assert m["vote_majority_agreement"] == pytest.approx(17 / 22)  # valid votes equal to their majority
    assert m["coverage"] == pytest.approx(5 / 6) and m["truth_no_rate"] == pytest.approx(4 / 6)
    assert m["invalid_vote_rate"] == pytest.approx(4 / 30)
    assert (stats["ties"], stats["invalid_votes"], stats["votes"]) == (1, 4, 30)
    assert (stats["truth_yes"], stats["truth_no"], stats["majority_no"], stats["majority_yes"]) == (2, 4, 3, 2)


def test_undefined_rates_are_none_not_zero():
    stats = calibration_metrics([True, False], [_judgement("yyy"), _judgement("yxx")])
    m = stats["metrics"]
    assert m["no_precision"] is None  # the judge never said No
    assert m["no_recall"] == 0.0 and m["no_f1"] is None and m["accuracy"] == 0.5
    all_invalid = calibration_metrics([True], [_judgement("xx")])["metrics"]
    assert all_invalid["accuracy"] is None and all_invalid["vote_accuracy"] is None
    with pytest.raises(ValueError, match="2 truths but 1 judgements"):
        calibration_metrics([True, False], [_judgement("y")])


# Truth by the rule checker: "Hi there friend" passes no_comma, "Hi, friend" fails it, "hi there" passes lowercase,
# "hi, there" fails no_comma.
RESPONSES = [
    ("Say hi without commas.", "Hi there friend", "yyyyy"),  # tn
    ("Say hi without commas.", "Hi, friend", "nnnyy"),  # tp
    ("Say hi in lowercase.", "hi there", "nnnnn"),  # fp
    ("Say hi in lowercase, no commas.", "hi, there", "yyynx"),
]  # fn
VOTES = {r: v for _, r, v in RESPONSES}


def _setup(tmp_path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", IFEVAL_PROMPTS)
    templates = write_json(tmp_path / "templates.json", TEMPLATES.to_dict())
    engine = ScriptedEngine(
        judge=lambda i, r, n: [vote_text(c, r) for c in VOTES[r]],
        actor=lambda i, n: ["Hi there friend", "Hi, friend"][:n],
    )
    return str(prompts), str(templates), engine


def test_run_on_a_responses_file_uses_the_spar_judge(tmp_path):
    prompts, templates, engine = _setup(tmp_path)
    rows = [{"prompt": p, "response": r} for p, r, _ in RESPONSES] + [{"prompt": "unknown", "response": "x"}]
    responses = write_jsonl(tmp_path / "responses.jsonl", rows)
    settings = CalibrationConfig(
        prompts_source=prompts,
        responses_file=str(responses),
        judge=JudgeConfig(templates_file=templates),
        label="refiner it1",
    )
    summary = calibration.run(engine, settings, tmp_path / "out")
    (call,) = engine.calls
    assert call.kind == "judge" and call.n == 5 and call.sampling["temperature"] == 0.7
    assert call.sampling["top_p"] == 1.0 and call.sampling["max_new_tokens"] == 1024
    assert [list(r) for r in call.requests] == [judge_messages(p, r, TEMPLATES) for p, r, _ in RESPONSES]
    assert summary["confusion"] == {"tp": 1, "fp": 1, "fn": 1, "tn": 1}
    assert summary["metrics"]["accuracy"] == 0.5 and summary["responses_ignored"] == 1
    assert (summary["items"], summary["prompts"], summary["invalid_votes"]) == (4, 3, 1)
    lines = [json.loads(s) for s in (tmp_path / "out" / "judgements.jsonl").read_text().splitlines()]
    assert [(d["truth"], d["judgement"]["label"]) for d in lines] == [
        ("yes", "yes"),
        ("no", "no"),
        ("yes", "no"),
        ("no", "yes"),
    ]
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == summary
    report = (tmp_path / "out" / "report.md").read_text()
    assert "refiner it1" in report and "| accuracy (decided items) | 50.00 |" in report


def test_run_samples_responses_from_the_actor(tmp_path):
    prompts, templates, engine = _setup(tmp_path)
    settings = CalibrationConfig(
        prompts_source=prompts, limit=1, samples_per_prompt=2, judge=JudgeConfig(k=5, templates_file=templates)
    )
    summary = calibration.run(engine, settings, tmp_path / "out")
    actor, judge = engine.calls
    assert actor.kind == "actor" and actor.n == 2 and len(actor.requests) == 1
    assert (actor.sampling["temperature"], actor.sampling["top_p"]) == (0.9, 0.9)
    assert ScriptedEngine.judged(judge) == ["Hi there friend", "Hi, friend"]
    assert summary["confusion"] == {"tp": 1, "fp": 0, "fn": 0, "tn": 1}


def test_bad_inputs_get_clear_errors(tmp_path):
    prompts, _, engine = _setup(tmp_path)
    with pytest.raises(ValueError, match="responses file not found"):
        calibration.run(
            engine, CalibrationConfig(prompts_source=prompts, responses_file=str(tmp_path / "no")), tmp_path / "o"
        )
    none = write_jsonl(tmp_path / "none.jsonl", [{"prompt": "other", "response": "x"}])
    with pytest.raises(ValueError, match="no response matches any of the 3 selected"):
        calibration.run(engine, CalibrationConfig(prompts_source=prompts, responses_file=str(none)), tmp_path / "o")
    with pytest.raises(ValueError, match="samples_per_prompt must be an int >= 1"):
        CalibrationConfig(samples_per_prompt=0)
    with pytest.raises(ValueError, match="JudgeConfig.k must be a positive int"):
        JudgeConfig(k=0)
