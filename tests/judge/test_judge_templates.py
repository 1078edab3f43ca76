import json
import re

import pytest

from spar_jax.judge.templates import (
    DEFAULT_TEMPLATES,
    Templates,
    actor_messages,
    judge_messages,
    parse_judgement,
    parse_refinement,
    refine_messages,
)


def reference_substring_parse(text):
    """The reference's rule, for contrast: case-sensitive substring search after the first marker."""
    if "Final Judgement" not in text:
        return None
    tail = text.split("Final Judgement", 1)[1]
    found = [(tail.find(w), w.lower()) for w in ("Yes", "No") if w in tail]
    return min(found)[1] if found else None


@pytest.mark.parametrize(
    "text, expected",
    [
        ("checks...\nFinal Judgement: Yes", "yes"),
        ("checks...\nFinal Judgement: No", "no"),
        ("Final Judgement: **No**.", "no"),
        ("Final Judgement:\n\nYes, every constraint holds.", "yes"),
        ("Final Judgement: Yes. No constraint is missed.", "yes"),  # both: the earlier wins
        ("Final Judgement: No. Yes, it is fluent, but...", "no"),
        ("Yes it has a title. No commas. Final Judgement: No", "no"),  # text before the marker is ignored
        ("Final Judgement: unclear", None),  # neither label
        ("Yes, all good. No problems.", None),  # no marker
        ("Final Judgment: Yes", "yes"),  # the other spelling is accepted
        ("final judgement: yes", None),  # marker and labels are case-sensitive
        ("Final Judgement: YES", None),
        ("Final Judgement: Not followed", None),  # whole words: "Not" is not "No"
        ("Final Judgement: None of the constraints hold", None),
        ("Final Judgement: Yesterday's format", None),
        ("Final Judgement: Not all hold, so No", "no"),
        ("Final Judgement: Yes\nFinal Judgement: No", "yes"),  # only the first marker matters
    ],
)
def test_parse_judgement(text, expected):
    assert parse_judgement(text) == expected


@pytest.mark.parametrize(
    "text, ours, reference",
    [
        ("Final Judgement: Not followed", None, "no"),
        ("Final Judgement: None of it", None, "no"),
        ("Final Judgement: Yesterday", None, "yes"),
        ("Final Judgement: Not all, so Yes", "yes", "no"),
        ("Final Judgement: No", "no", "no"),
    ],
)
def test_whole_word_matching_differs_from_reference_substring(text, ours, reference):
    assert parse_judgement(text) == ours
    assert reference_substring_parse(text) == reference


@pytest.mark.parametrize(
    "text, expected",
    [
        ("I will fix the title.\n[[start]]\n  New text\n[[end]]", "New text"),
        ("Put it between [[start]] and [[end]].\n[[start]]\nReal\n[[end]]", "Real"),  # last start wins
        ("[[start]]\nA\n[[end]] trailing [[end]]", "A"),
        ("[[start]]\nmulti\nline\n\n[[end]]", "multi\nline"),
        ("no markers at all", None),
        ("[[start]]\ntruncated without end", None),
        ("[[end]] before [[start]] text", None),
        ("[[start]]   \n [[end]]", None),  # empty after stripping
    ],
)
def test_parse_refinement(text, expected):
    assert parse_refinement(text) == expected


def test_message_builders():
    assert actor_messages("Write a haiku.") == [{"role": "user", "content": "Write a haiku."}]
    judge = judge_messages("Write {x} in JSON.", '{"x": 1}')
    assert len(judge) == 1 and judge[0]["role"] == "user"
    assert "Write {x} in JSON." in judge[0]["content"] and '{"x": 1}' in judge[0]["content"]
    assert "Final Judgement" in judge[0]["content"]
    refine = refine_messages("Instr", "Resp", "Crit\nFinal Judgement: No")
    assert [m["role"] for m in refine] == ["user", "assistant", "user"]
    assert refine[0] == judge_messages("Instr", "Resp")[0]
    assert refine[1]["content"] == "Crit\nFinal Judgement: No"
    assert "[[start]]" in refine[2]["content"] and "[[end]]" in refine[2]["content"]


def test_templates_file_override(tmp_path):
    path = tmp_path / "templates.json"
    path.write_text(json.dumps({"refine": "For {instruction}: fix it, output in [[start]] ... [[end]]"}))
    t = Templates.from_file(path)
    assert t.judge == DEFAULT_TEMPLATES.judge  # missing keys keep the defaults
    assert refine_messages("I", "R", "C", t)[2]["content"] == "For I: fix it, output in [[start]] ... [[end]]"
    assert Templates.from_file(path) == t


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"judge": "Is {response} ok? Final Judgement"}', "key 'judge' must use the fields"),
        ('{"judge": "{instruction} {response} {extra} Final Judgement"}', "found ['extra', 'instruction'"),
        ('{"judge": "{instruction} {response}"}', "protocol marker 'Final Judgement'"),
        ('{"refine": "fix it between [[start]] and the end"}', "protocol marker '[[end]]'"),
        ('{"refine": "unbalanced } [[start]] [[end]]"}', "bad template"),
        ('{"refine": 3}', "must be a string"),
        ('{"judge_prompt": "x"}', "unknown key(s) ['judge_prompt']"),
        ('["judge"]', "expected a JSON object"),
        ('{\n"judge": "x",\n}', ":3:1: invalid JSON"),
    ],
)
def test_templates_file_errors_name_file_and_key(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=re.escape(message)) as e:
        Templates.from_file(path)
    assert str(path) in str(e.value)


def test_missing_templates_file(tmp_path):
    with pytest.raises(ValueError, match="cannot read templates file"):
        Templates.from_file(tmp_path / "nope.json")


def test_default_templates_keep_protocol():
    assert "{instruction}" in DEFAULT_TEMPLATES.judge and "{response}" in DEFAULT_TEMPLATES.judge
    with pytest.raises(ValueError, match="Templates: key 'judge'"):
        Templates(judge="no fields here, Final Judgement")
