"""Strict/loose scoring, the four metrics, data loading, report writing and CLI."""

import collections
import json

import pytest

from spar_jax import ifeval
from spar_jax.ifeval.__main__ import main as cli_main


def test_response_variants_match_reference_construction():
    assert ifeval.response_variants("a*\nb\nc*") == ("a*\nb\nc*", "a\nb\nc", "b\nc*", "a*\nb", "b", "b\nc", "a\nb", "b")
    # removed-line variants are stripped, the full response and its "*"-free copy are not
    assert ifeval.response_variants(" x\ny\n") == (" x\ny\n", " x\ny\n", "y", "x\ny", "y", "y", "x\ny", "y")


@pytest.mark.parametrize(
    "ids,kwargs,response,strict,loose",
    [
        # first line is chatter: quotation and no_comma only pass without it
        (
            ["startend:quotation", "punctuation:no_comma"],
            [{}, {}],
            'Sure, here:\n"Hello world"',
            [False, False],
            [True, True],
        ),
        # last line is chatter
        (
            ["startend:end_checker"],
            [{"end_phrase": "Any other questions?"}],
            "Text. Any other questions?\nHope this helps!",
            [False],
            [True],
        ),
        # markdown "*" removed
        (["startend:quotation"], [{}], '*"Hello"*', [False], [True]),
        # passes strictly, so loose too
        (["punctuation:no_comma"], [{}], "fine", [True], [True]),
        # nothing rescues it
        (["punctuation:no_comma"], [{}], "a, b\nc, d\ne, f", [False], [False]),
        # a blank response follows nothing, even "no comma"
        (
            ["punctuation:no_comma", "keywords:forbidden_words"],
            [{}, {"forbidden_words": ["x"]}],
            " \n ",
            [False, False],
            [False, False],
        ),
    ],
)
def test_strict_vs_loose(ids, kwargs, response, strict, loose):
    assert ifeval.check(ids, kwargs, "prompt", response) == (strict, loose)


def test_check_rejects_mismatched_lengths_and_non_string_response():
    with pytest.raises(ValueError, match="2 instruction ids but 1 kwargs"):
        ifeval.check(["punctuation:no_comma", "startend:quotation"], [{}], "p", "r")
    with pytest.raises(ValueError, match="response must be a string"):
        ifeval.check(["punctuation:no_comma"], [{}], "p", None)


def _hand_made_prompts():
    return [
        {
            "key": 1,
            "prompt": "P1",
            "instruction_id_list": ["punctuation:no_comma", "startend:quotation"],
            "kwargs": [{}, {}],
        },
        {
            "key": 2,
            "prompt": "P2",
            "instruction_id_list": ["length_constraints:number_words"],
            "kwargs": [{"num_words": 3, "relation": "at least"}],
        },
        {
            "key": 3,
            "prompt": "P3",
            "instruction_id_list": ["detectable_format:title", "startend:end_checker"],
            "kwargs": [{}, {"end_phrase": "Bye."}],
        },
    ]


HAND_RESPONSES = {"P1": 'Intro, here:\n"Hello"', "P2": "one two three", "P3": "<<T>>\nHello.\nBye!"}


def test_four_metrics_on_hand_made_set():
    report = ifeval.score_responses(_hand_made_prompts(), HAND_RESPONSES)
    # P1 strict [F, F] loose [T, T]; P2 [T] [T]; P3 strict [T, F] loose [T, F]
    assert [r.strict for r in report.results] == [(False, False), (True,), (True, False)]
    assert [r.loose for r in report.results] == [(True, True), (True,), (True, False)]
    m = report.metrics
    assert m["prompt_level_strict"] == pytest.approx(1 / 3)
    assert m["prompt_level_loose"] == pytest.approx(2 / 3)
    assert m["instruction_level_strict"] == pytest.approx(2 / 5)
    assert m["instruction_level_loose"] == pytest.approx(4 / 5)
    assert m["average"] == pytest.approx((1 / 3 + 2 / 3 + 2 / 5 + 4 / 5) / 4)
    assert report.per_instruction["startend:end_checker"] == {"count": 1, "strict": 0.0, "loose": 0.0}
    assert report.per_instruction["startend:quotation"] == {"count": 1, "strict": 0.0, "loose": 1.0}
    assert report.per_category["startend"] == {"count": 2, "strict": 0.0, "loose": 0.5}
    assert report.per_category["detectable_format"] == {"count": 1, "strict": 1.0, "loose": 1.0}
    assert (report.num_prompts, report.num_instructions) == (3, 5)


def test_responses_as_mapping_sequence_or_file_agree(tmp_path):
    prompts = _hand_made_prompts()
    path = tmp_path / "responses.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in HAND_RESPONSES.items()))
    by_map = ifeval.score_responses(prompts, {**HAND_RESPONSES, "extra prompt": "ignored"})
    by_seq = ifeval.score_responses(prompts, [HAND_RESPONSES[p["prompt"]] for p in prompts])
    by_file = ifeval.score_responses(prompts, path)
    assert by_map.metrics == by_seq.metrics == by_file.metrics


def test_missing_response_is_a_clear_error():
    with pytest.raises(ValueError, match="1 of 3 IFEval prompts have no response; first missing: key=2"):
        ifeval.score_responses(_hand_made_prompts(), {"P1": "x", "P3": "y"})
    with pytest.raises(ValueError, match="got 2 responses for 3"):
        ifeval.score_responses(_hand_made_prompts(), ["x", "y"])


def test_shared_prompts_all_constructible_and_cover_25_types(shared_data):
    prompts = ifeval.load_ifeval_prompts(shared_data / "ifeval" / "input_data.jsonl")
    assert len(prompts) == 541
    counts = collections.Counter(i for p in prompts for i in p.instruction_id_list)
    assert sum(counts.values()) == 834
    assert set(counts) == set(ifeval.INSTRUCTION_IDS)
    for p in prompts:
        for instruction_id, kw in zip(p.instruction_id_list, p.kwargs):
            assert callable(ifeval.build_checker(instruction_id, kw))


def _write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


GOOD = json.dumps({"key": 7, "prompt": "Say hi", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]})


@pytest.mark.parametrize(
    "second_line,needle",
    [
        ("{not json", r"prompts\.jsonl:2: invalid JSON"),
        (json.dumps({"key": 8, "prompt": "x", "instruction_id_list": []}), r"prompts\.jsonl:2: missing field 'kwargs'"),
        (
            json.dumps({"key": 8, "prompt": "x", "instruction_id_list": ["bogus:id"], "kwargs": [{}]}),
            r"prompts\.jsonl:2: unknown IFEval instruction id 'bogus:id'",
        ),
        (
            json.dumps({"key": 8, "prompt": "x", "instruction_id_list": ["startend:end_checker"], "kwargs": [{}]}),
            r"prompts\.jsonl:2: .*'end_phrase' is required",
        ),
        (
            json.dumps({"key": 8, "prompt": "x", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}, {}]}),
            r"prompts\.jsonl:2: field 'kwargs'",
        ),
        (
            GOOD.replace('"key": 7', '"key": 9'),
            r"prompts\.jsonl:2: duplicate prompt text \(first at .*prompts\.jsonl:1\)",
        ),
    ],
)
def test_prompt_file_errors_name_file_and_line(tmp_path, second_line, needle):
    path = _write_lines(tmp_path / "prompts.jsonl", [GOOD, second_line])
    with pytest.raises(ValueError, match=needle):
        ifeval.load_ifeval_prompts(path)


def test_prompt_file_drops_none_kwargs(tmp_path):
    line = json.dumps(
        {
            "key": 1,
            "prompt": "p",
            "instruction_id_list": ["detectable_format:number_highlighted_sections"],
            "kwargs": [{"num_highlights": 2, "relation": None, "language": None}],
        }
    )
    prompts = ifeval.load_ifeval_prompts(_write_lines(tmp_path / "p.jsonl", ["", line, ""]))
    assert prompts[0].kwargs == ({"num_highlights": 2},)


def test_missing_local_file_and_unreachable_hub(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="not found"):
        ifeval.load_ifeval_prompts(str(tmp_path / "nope.jsonl"))
    import datasets

    def offline(*args, **kwargs):  # the network is not part of this machine
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(RuntimeError, match="(?s)'google/IFEval'.*offline.*local JSONL"):
        ifeval.load_ifeval_prompts()


def test_datasets_source_is_validated_with_row_numbers(monkeypatch, tmp_path):
    # A local dataset directory goes through the same `datasets` path as a hub name.
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    good = tmp_path / "good"
    good.mkdir()
    _write_lines(good / "train.jsonl", [json.dumps(p) for p in _hand_made_prompts()])
    prompts = ifeval.load_ifeval_prompts(str(good))
    assert [p.key for p in prompts] == [1, 2, 3]
    assert prompts[2].kwargs == ({}, {"end_phrase": "Bye."})
    bad = tmp_path / "bad"
    bad.mkdir()
    rows = _hand_made_prompts()
    rows[1]["kwargs"] = [{"num_words": 3, "relation": "more"}]
    _write_lines(bad / "train.jsonl", [json.dumps(p) for p in rows])
    with pytest.raises(ValueError, match="row 1: .*'relation'"):
        ifeval.load_ifeval_prompts(str(bad))


@pytest.mark.parametrize(
    "lines,needle",
    [
        (['{"prompt": "a"}'], r"r\.jsonl:1: missing field 'response'"),
        (['{"prompt": "a", "response": 3}'], r"r\.jsonl:1: field 'response' must be a string"),
        (
            ['{"prompt": "a", "response": "x"}', '{"prompt": "a", "response": "y"}'],
            r"r\.jsonl:2: duplicate prompt \(first at line 1\)",
        ),
    ],
)
def test_response_file_errors(tmp_path, lines, needle):
    with pytest.raises(ValueError, match=needle):
        ifeval.load_responses(_write_lines(tmp_path / "r.jsonl", lines))


def test_write_report_files(tmp_path):
    report = ifeval.score_responses(_hand_made_prompts(), HAND_RESPONSES)
    paths = ifeval.write_report(report, tmp_path / "out", extra={"model": "hand"})
    summary = json.loads(paths["summary"].read_text())
    assert summary["model"] == "hand"
    assert summary["metrics"] == pytest.approx(report.metrics)
    assert summary["per_instruction"]["startend:quotation"]["loose"] == 1.0
    rows = [json.loads(line) for line in paths["results"].read_text().splitlines()]
    assert [r["key"] for r in rows] == [1, 2, 3]
    assert rows[0]["follow_instruction_list_loose"] == [True, True]
    assert rows[2]["follow_all_instructions_strict"] is False
    md = paths["markdown"].read_text()
    assert "| prompt | 33.33 | 66.67 |" in md and "| instruction | 40.00 | 80.00 |" in md
    assert "| startend:end_checker | 1 | 0.00 | 0.00 |" in md
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.md", "results.jsonl", "summary.json"]


def test_cli_scores_a_responses_file(tmp_path, capsys):
    prompts = _write_lines(tmp_path / "prompts.jsonl", [json.dumps(p) for p in _hand_made_prompts()])
    responses = _write_lines(
        tmp_path / "responses.jsonl", [json.dumps({"prompt": p, "response": r}) for p, r in HAND_RESPONSES.items()]
    )
    code = cli_main(["--prompts", str(prompts), "--responses", str(responses), "--out", str(tmp_path / "o")])
    printed = json.loads(capsys.readouterr().out)
    assert code == 0
    assert printed["metrics"]["prompt_level_loose"] == pytest.approx(2 / 3)
    assert (tmp_path / "o" / "report.md").is_file()
    bad = _write_lines(tmp_path / "bad.jsonl", ['{"prompt": "P1"}'])
    assert cli_main(["--prompts", str(prompts), "--responses", str(bad), "--out", str(tmp_path / "o2")]) == 2
    assert "bad.jsonl:1: missing field 'response'" in capsys.readouterr().err
