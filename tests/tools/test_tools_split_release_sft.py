"""Splitting a release-shaped SFT file (LLaMA-Factory ShareGPT) into actor and refiner data by the judge prompt."""

import json

from spar_jax.judge.templates import DEFAULT_TEMPLATES, judge_messages, refine_messages
from spar_jax.tools.split_release_sft import judge_prefix, main
from spar_jax.training.records import iter_records


def _sharegpt(messages):
    return {
        "conversations": [
            {"from": {"user": "human", "assistant": "gpt"}[m["role"]], "value": m["content"]} for m in messages
        ]
    }


def test_splits_by_the_judge_prompt_and_keeps_the_layout(tmp_path, capsys):
    judge = judge_messages("Write two lines.", "One line.") + [{"role": "assistant", "content": "Final Judgement: No"}]
    refine = refine_messages("Write two lines.", "One line.", "Final Judgement: No") + [
        {"role": "assistant", "content": "Add a line.\n[[start]]\nOne.\nTwo.\n[[end]]"}
    ]
    plain = [{"role": "user", "content": "Write two lines."}, {"role": "assistant", "content": "One.\nTwo."}]
    records = [
        _sharegpt(plain),
        _sharegpt(judge),
        _sharegpt(refine),
        {"instruction": "Name a color.", "input": "", "output": "Blue."},
    ]
    data = tmp_path / "sft" / "data.json"
    data.parent.mkdir()
    data.write_text(json.dumps(records))
    templates = tmp_path / "templates.json"
    templates.write_text(json.dumps(DEFAULT_TEMPLATES.to_dict()))
    assert judge_prefix(DEFAULT_TEMPLATES) == DEFAULT_TEMPLATES.judge.split("{instruction}")[0].strip()
    assert main([str(data), "--templates", str(templates)]) == 0
    actor = [r for _, r in iter_records(str(tmp_path / "sft" / "actor.jsonl"))]
    refiner = [r for _, r in iter_records(str(tmp_path / "sft" / "refiner.jsonl"))]
    assert actor == [records[0], records[3]] and refiner == [records[1], records[2]]
    assert "2 actor records" in capsys.readouterr().out


def test_errors_are_one_line(tmp_path, capsys):
    templates = tmp_path / "t.json"
    templates.write_text(json.dumps(DEFAULT_TEMPLATES.to_dict()))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"conversations": [{"from": "gpt", "value": "x"}]}\n')
    assert main([str(bad), "--templates", str(templates)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {bad}:1: no user turn")
    assert main([str(tmp_path / "missing.json"), "--templates", str(templates)]) == 2
