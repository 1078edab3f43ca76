"""FollowBench: loading the shared copy, the per-constraint checks, SSR/HSR arithmetic, and a run with fake engines."""

import json
from collections import Counter

import pytest

from spar_jax.eval import followbench
from spar_jax.eval.followbench import FollowBenchConfig, followbench_metrics
from spar_jax.eval.followbench_data import CATEGORIES, JudgeTemplates, build_checks, load_followbench

from eval_fakes import FnEngine, write_json


def test_loads_the_shared_copy_and_builds_checks(shared_data):
    records = load_followbench(str(shared_data / "followbench"))
    assert len(records) == 944
    per_category = Counter(r.category for r in records)
    assert per_category == {"content": 150, "situation": 132, "style": 180, "format": 180, "example": 200, "mixed": 102}
    assert Counter(r.level for r in records if r.category == "example") == {lv: 40 for lv in range(1, 6)}
    assert Counter(r.level for r in records if r.category == "content") == {lv: 25 for lv in range(6)}
    assert all(r.answer for r in records if r.category == "example")
    checks = build_checks(records)
    assert len(checks) == 820  # the level 1-5 records
    # every non-example example has levels 0..5, so a level-n record gets n constraint checks
    groups = {"content": 25, "situation": 22, "style": 30, "format": 30, "mixed": 17}
    assert sum(map(len, checks)) == sum(15 * g for g in groups.values()) + 200
    whole = [c for cs in checks for c in cs if c.index == 0]
    assert len(whole) == 200 and {c.record.category for c in whole} == {"example"}
    level3 = next(cs for cs in checks if cs[0].record.category == "style" and cs[0].record.level == 3)
    eid = level3[0].record.example_id
    by_level = {r.level: r.instruction for r in records if (r.category, r.example_id) == ("style", eid)}
    assert [(c.index, c.previous, c.current) for c in level3] == [(j, by_level[j - 1], by_level[j]) for j in (1, 2, 3)]
    empty_base = next(cs for cs in checks if (cs[0].record.category, cs[0].record.example_id) == ("content", 9))
    assert empty_base[0].previous == "" and "[Version before the step]\n(empty: " in JudgeTemplates().render(
        empty_base[0], "r"
    )
    limited = load_followbench(str(shared_data / "followbench"), ["mixed"], limit=2)
    assert len(limited) == 12 and {r.example_id for r in limited} == {1, 2}


def test_bad_files_get_clear_errors(tmp_path):
    write_json(tmp_path / "content_constraints.json", [{"example_id": 1, "level": 6, "instruction": "x"}])
    with pytest.raises(ValueError, match=r"content_constraints.json: record 0: key 'level' must be an integer 0-5"):
        load_followbench(str(tmp_path), ["content"])
    write_json(tmp_path / "format_constraints.json", [{"example_id": 1, "level": 1, "instruction": " "}])
    with pytest.raises(ValueError, match="record 0: key 'instruction' must be a string, non-empty above level 0"):
        load_followbench(str(tmp_path), ["format"])
    write_json(tmp_path / "style_constraints.json", [{"example_id": 1, "level": 1, "instruction": "x"}] * 2)
    with pytest.raises(ValueError, match="record 1: duplicate"):
        load_followbench(str(tmp_path), ["style"])
    with pytest.raises(ValueError, match="file not found"):
        load_followbench(str(tmp_path), ["situation"])
    with pytest.raises(ValueError, match="levels must be a non-empty subset"):
        FollowBenchConfig(levels=(0, 1))
    with pytest.raises(ValueError, match="unknown or empty"):
        FollowBenchConfig(categories=("poetry",))
    assert set(CATEGORIES) == {"content", "situation", "style", "format", "example", "mixed"}


def test_ssr_and_hsr_per_level_by_hand():
    rows = [
        ("content", 1, ["yes"]),
        ("content", 1, ["no"]),
        ("content", 2, ["yes", "no"]),
        ("style", 2, ["yes", None]),
        ("example", 2, ["yes"]),
    ]
    stats = followbench_metrics(rows)
    m = stats["metrics"]
    assert m["ssr_level_1"] == 0.5 and m["ssr_level_2"] == pytest.approx(2 / 3)
    assert m["ssr_avg"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert m["hsr_level_1"] == 0.5 and m["hsr_level_2"] == pytest.approx(1 / 3)
    assert "ssr_level_3" not in m
    assert stats["per_category_ssr"] == {"content": {"1": 0.5, "2": 0.5}, "example": {"2": 1.0}, "style": {"2": 0.5}}
    assert (stats["checks"], stats["unresolved_checks"], stats["responses_per_level"]) == (7, 1, {"1": 2, "2": 3})
    with pytest.raises(ValueError, match="has no checks"):
        followbench_metrics([("content", 1, [])])


def test_templates_are_validated_and_overridable(tmp_path):
    with pytest.raises(ValueError, match="must use exactly the fields"):
        JudgeTemplates(whole="{instruction} {response} Final Judgement")
    with pytest.raises(ValueError, match="mention 'Final Judgement'"):
        JudgeTemplates(whole="{instruction} {reference} {response}")
    path = write_json(tmp_path / "t.json", {"whole": "W {instruction}|{reference}|{response} Final Judgement"})
    t = JudgeTemplates.from_file(path)
    assert t.whole.startswith("W ") and t.constraint == JudgeTemplates().constraint
    with pytest.raises(ValueError, match="t2.json: expected a JSON object with keys"):
        JudgeTemplates.from_file(write_json(tmp_path / "t2.json", {"judge": "x"}))


def _data(tmp_path):
    write_json(
        tmp_path / "fb" / "content_constraints.json",
        [
            {"example_id": 1, "level": lv, "instruction": text, "target": ""}
            for lv, text in enumerate(["base", "base + A", "base + A + B", "base + A + B + C"])
        ],
    )
    write_json(
        tmp_path / "fb" / "example_constraints.json",
        [{"example_id": 7, "level": 1, "instruction": "pattern Q", "target": "", "answer": "ANS"}],
    )
    return str(tmp_path / "fb")


def _judge(messages, n):
    text = messages[0]["content"]
    if "[Reference answer" in text:
        ok = "ANS" in text and "answer to pattern Q" in text
    else:
        ok = "[Version after the step]\nbase + A + B\n" not in text  # constraint B is never met
    return [f"checked\nFinal Judgement: {'Yes' if ok else 'No'}"] * n


def test_run_generates_judges_each_constraint_and_names_the_judge(tmp_path):
    source = _data(tmp_path)
    actor = FnEngine(lambda messages, n: [f"answer to {messages[0]['content']}"] * n)
    judge = FnEngine(_judge)
    settings = FollowBenchConfig(
        source=source,
        categories=("content", "example"),
        levels=(1, 2),
        max_new_tokens=32,
        judge_name="tiny-judge",
        label="iter 2",
    )
    summary = followbench.run(actor, settings, tmp_path / "out", judge_engine=judge)
    (gen,) = actor.calls
    assert [r[0]["content"] for r in gen.requests] == ["base + A", "base + A + B", "pattern Q"]
    assert gen.sampling["temperature"] == 0.0 and gen.sampling["max_new_tokens"] == 32
    (call,) = judge.calls
    assert call.n == 1 and call.sampling["temperature"] == 0.0 and len(call.requests) == 1 + 2 + 1
    templates = JudgeTemplates()
    checks = [c for cs in build_checks(load_followbench(source, ["content", "example"]), (1, 2)) for c in cs]
    responses = ["answer to base + A", "answer to base + A + B", "answer to base + A + B", "answer to pattern Q"]
    assert [r[0]["content"] for r in call.requests] == [templates.render(c, r) for c, r in zip(checks, responses)]
    m = summary["metrics"]
    assert (m["ssr_level_1"], m["ssr_level_2"], m["ssr_avg"]) == (1.0, 0.5, 0.75)
    assert (m["hsr_level_1"], m["hsr_level_2"], m["hsr_avg"]) == (1.0, 0.0, 0.5)
    assert summary["judge"] == "tiny-judge" and summary["finish_reasons"] == {"stop": 3}
    report = (tmp_path / "out" / "report.md").read_text()
    assert "**Judge: tiny-judge**" in report and "| SSR | 100.00 | 50.00 | 75.00 |" in report
    assert summary["note"].startswith("Judge is tiny-judge, not GPT-4") and summary["note"] in report
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["note"] == summary["note"]
    assert "| content | 100.00 | 50.00 | 75.00 |" in report and "| example | 100.00 | – | 100.00 |" in report
    lines = [json.loads(s) for s in (tmp_path / "out" / "judgements.jsonl").read_text().splitlines()]
    assert [[c["judgement"]["label"] for c in r["checks"]] for r in lines] == [["yes"], ["yes", "no"], ["yes"]]

    # Re-judge the saved responses with another judge, without generating.
    rejudge = FnEngine(_judge)
    again = followbench.run(
        None,
        FollowBenchConfig(
            source=source,
            categories=("content", "example"),
            levels=(1, 2),
            responses_file=str(tmp_path / "out" / "responses.jsonl"),
        ),
        tmp_path / "again",
        judge_engine=rejudge,
    )
    assert again["metrics"] == m and len(rejudge.calls) == 1 and again["judge"] == "unnamed judge model"
    assert "not GPT-4" in again["note"]

    with pytest.raises(
        ValueError,
        match="1 of 4 FollowBench records have no response; first missing: category=content example_id=1 level=3",
    ):
        followbench.run(
            None,
            FollowBenchConfig(
                source=source,
                categories=("content", "example"),
                responses_file=str(tmp_path / "out" / "responses.jsonl"),
            ),
            tmp_path / "x",
            judge_engine=rejudge,
        )


def test_self_judging_uses_the_same_engine(tmp_path):
    source = _data(tmp_path)

    def both(messages, n):
        text = messages[0]["content"]
        return _judge(messages, n) if "Final Judgement" in text else [f"answer to {text}"] * n

    engine = FnEngine(both)
    summary = followbench.run(
        engine, FollowBenchConfig(source=source, categories=("content",), levels=(3,)), tmp_path / "out"
    )
    assert len(engine.calls) == 2 and summary["judge"] == "the evaluated model itself"
    assert summary["metrics"]["ssr_level_3"] == pytest.approx(2 / 3) and summary["metrics"]["hsr_level_3"] == 0.0


@pytest.mark.parametrize(
    "name, noted",
    [
        ("gpt-4-1106-preview", False),
        ("GPT-4", False),
        ("GPT 4o", False),
        ("runs/x/iter_3/refiner/hf", True),
        ("gpt-3.5-turbo", True),
    ],
)
def test_note_unless_the_judge_is_gpt4(name, noted):
    assert (followbench.judge_note(name) is not None) == noted
