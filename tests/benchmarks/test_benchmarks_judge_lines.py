"""benchmarks/judge_lines.py: the rank AUC against hand-computed cases, the bootstrap over examples, the recovery of
instruction types from the requirement wording, and an end-to-end run on a tiny random model."""

import importlib.util
import json
import pathlib
import random

import numpy as np
import pytest

from spar_jax.models import from_pretrained, load_tokenizer
from spar_jax.models.tokenizer import chat_prompt_ids
from spar_jax.spar.bootstrap import describe
from spar_jax.spar.constraint_prompts import MAKERS

from tiny_checkpoints import copy_demo_tokenizer, write_checkpoint

_SPEC = importlib.util.spec_from_file_location(
    "judge_lines", pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "judge_lines.py"
)
J = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(J)


def test_auc_counts_ties_half():
    # positives 0.9, 0.5, 0.5 vs negatives 0.5, 0.1: pairs won 1, 1 | 0.5, 1 | 0.5, 1 -> 5 / 6
    assert J.auc([0.9, 0.5, 0.5, 0.5, 0.1], [1, 1, 1, 0, 0]) == pytest.approx(5 / 6)
    assert J.auc([0.1, 0.5, 0.5, 0.5, 0.9], [1, 1, 1, 0, 0]) == pytest.approx(1 / 6)
    assert J.auc([3.0, 3.0, 3.0, 3.0], [1, 0, 1, 0]) == 0.5
    assert J.auc([2.0, 1.0], [0, 1]) == 0.0
    assert np.isnan(J.auc([1.0, 2.0], [1, 1]))


def test_auc_within_strata_pairs_lines_of_one_stratum_only():
    # a: 0.9 vs 0.1 -> 1 of 1 pair; b: 0.2, 0.2 vs 0.2 -> two ties, 1 of 2; c: one class, no pair -> 2 / 3
    s, y, g = [0.9, 0.1, 0.2, 0.2, 0.2, 0.7], [1, 0, 1, 1, 0, 1], list("aabbbc")
    assert J.auc_within(s, y, g) == pytest.approx(2 / 3)
    # A score that is each stratum's base rate separates the classes pooled, not within strata.
    s, y, g = [0.8, 0.8, 0.8, 0.8, 0.2, 0.2, 0.2, 0.2], [1, 1, 1, 0, 1, 0, 0, 0], list("aaaabbbb")
    assert J.auc(s, y) == pytest.approx(0.75) and J.auc_within(s, y, g) == 0.5
    assert np.isnan(J.auc_within([1.0, 2.0], [1, 0], ["a", "b"]))


def test_bootstrap_resamples_examples_not_lines():
    # One example: every resample draws it whole, so the interval is the point value (resampling lines would not).
    s, y = [0.9, 0.5, 0.5, 0.5, 0.1], [1, 1, 1, 0, 0]
    one = J.bootstrap_auc([0] * 5, s, y, resamples=50)
    assert one["low"] == one["high"] == one["auc"] == pytest.approx(5 / 6) and one["resamples_used"] == 50
    # Two one-class examples: a resample has both classes only when it draws both.
    two = J.bootstrap_auc([0, 0, 0, 1, 1], s, y, resamples=400, seed=1)
    assert 100 < two["resamples_used"] < 300 and two["low"] == two["high"] == pytest.approx(5 / 6)
    rng = np.random.default_rng(0)
    ex, s, y = np.repeat(np.arange(30), 3), rng.normal(size=90), rng.random(90) < 0.5
    a, b = J.bootstrap_auc(ex, s, y, seed=3), J.bootstrap_auc(ex, s, y, seed=3)
    assert a == b and a["low"] < a["auc"] < a["high"]


def test_every_requirement_wording_maps_back_to_its_type():
    for iid, make in MAKERS.items():
        for seed in range(20):
            assert J.instruction_type(describe(iid, make(random.Random(seed)).kwargs)) == iid
    at_least = describe("length_constraints:number_sentences", {"relation": "at least", "num_sentences": 3})
    assert J.instruction_type(at_least) == "length_constraints:number_sentences"
    assert J.instruction_type("The response is polite") == "unknown"


JUDGE = "Decide whether the response below follows the instruction.\n\n[Instruction]\n{}\n\n[Response]\n{}"
EXAMPLES = [
    {"messages": [{"role": "user", "content": "Rewrite: a, b"}, {"role": "assistant", "content": "a b"}]},
    {
        "messages": [
            {"role": "user", "content": JUDGE.format("Describe a lake. Do not use any commas.", "A calm lake.")},
            {
                "role": "assistant",
                "content": "Checking each requirement of the instruction against the response:\n"
                "1. The response uses no commas: met.\n"
                "2. The response has fewer than 50 words: met (it has 3 words).\n"
                "Final Judgement: Yes",
            },
        ]
    },
    {
        "messages": [
            {"role": "user", "content": JUDGE.format("Describe a harbor. No commas. Add a title.", "Boats, gulls.")},
            {
                "role": "assistant",
                "content": "Checking each requirement of the instruction against the response:\n"
                "1. The response has a title wrapped in double angular brackets, such as <<my title>>: not met: "
                "there is no title in double angular brackets.\n"
                "2. The response uses no commas: not met: it contains 1 comma(s).\n"
                "3. The response is cheerful: met.\n"
                "Final Judgement: No",
            },
        ]
    },
]


def test_end_to_end_on_a_tiny_model(tmp_path, capsys):
    ckpt = write_checkpoint(tmp_path / "m", "smollm2", seed=5, vocab_size=49152)
    copy_demo_tokenizer(ckpt)
    data, out = tmp_path / "judge.jsonl", tmp_path / "lines.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in EXAMPLES))
    J.main(["--refiner", ckpt, "--data", str(data), "--examples", "5", "--resamples", "200", "--lines-out", str(out)])
    res = json.loads(capsys.readouterr().out)
    lines = [json.loads(t) for t in out.read_text().splitlines()]
    assert res["examples"] == 2 and res["lines"] == len(lines) == 5
    assert [(r["example"], r["met"], r["type"]) for r in lines] == [
        (0, True, "punctuation:no_comma"),
        (0, True, "length_constraints:number_words"),
        (1, False, "detectable_format:title"),
        (1, False, "punctuation:no_comma"),
        (1, True, "unknown"),
    ]
    # Each s is the log-odds the model gives when it reads the target only up to that line's colon.
    model, tok = from_pretrained(ckpt), load_tokenizer(ckpt)
    (met,), (neg,) = tok.encode(" met", add_special_tokens=False), tok.encode(" not", add_special_tokens=False)
    cuts = [EXAMPLES[1], EXAMPLES[1], EXAMPLES[2], EXAMPLES[2], EXAMPLES[2]]
    targets = [r["messages"][-1]["content"] for r in cuts]
    colons = [targets[0].index(": met"), targets[1].index("words: met") + 5]
    colons += [targets[2].index(": not met"), targets[3].index("commas: not") + 6, targets[4].index("cheerful:") + 8]
    for r, rec, target, colon in zip(lines, cuts, targets, colons):
        ids = chat_prompt_ids(tok, rec["messages"][:-1]) + tok.encode(target[: colon + 1], add_special_tokens=False)
        logits = np.asarray(model(np.asarray([ids]))[0, -1], dtype=np.float64)
        assert r["s"] == pytest.approx(logits[met] - logits[neg], abs=1e-4)
    s, y = [r["s"] for r in lines], [r["met"] for r in lines]
    assert res["auc"]["auc"] == pytest.approx(J.auc(s, y)) and (res["auc"]["n_met"], res["auc"]["n_not_met"]) == (3, 2)
    assert res["auc_within_type"]["auc"] == (1.0 if s[0] > s[3] else 0.0 if s[0] < s[3] else 0.5)
    assert res["auc"]["mean_s_met"] == pytest.approx(np.mean([s[0], s[1], s[4]]))
    assert res["auc"]["mean_s_not_met"] == pytest.approx(np.mean(s[2:4]))
    assert list(res["per_type"]) == ["punctuation:no_comma"]
    assert res["per_type"]["punctuation:no_comma"]["auc"] == (1.0 if s[0] > s[3] else 0.0 if s[0] < s[3] else 0.5)
    assert res["one_class_types"] == {"detectable_format:title": 1, "length_constraints:number_words": 1, "unknown": 1}
    right = [int((r["s"] > 0) == r["met"]) for r in lines]
    assert res["lines_right"] == {"yes_examples": [sum(right[:2]), 2], "no_examples": [sum(right[2:]), 3]}
