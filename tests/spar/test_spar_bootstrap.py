"""Stage-0 offline data: rule fixers verified by the IFEval checker, checker critiques, and the SFT pools."""

import random
import re

import pytest

from spar_jax import ifeval
from spar_jax.judge.templates import judge_messages, parse_judgement, parse_refinement, refine_messages
from spar_jax.spar import bootstrap, constraint_prompts, repair

PARAGRAPH = (
    "Bees are important for farming, because they pollinate many crops. Without bees, farmers would really "
    "struggle to grow Apples, almonds, and berries. In fact, about a third of our food depends on them. "
    "Honestly, it is very simple: protect the bees, and they will protect our harvests."
)
MARKDOWN = (
    "## How It Works\n\nA compass has a magnetized needle, which points north.\n\n**Key points:**\n"
    "1. The needle aligns with Earth's field.\n2. The housing rotates, so you can set a bearing.\n\n"
    "- Keep it away from metal.\n- Hold it flat.\n\nI hope this helps!"
)
LETTER = '"Dear tomato, you are the first of the season, and I\'m so proud of you."\n\nP.S. Grow big!'
RESPONSES = (PARAGRAPH, MARKDOWN, LETTER)


def passes(ids, kwargs, text):
    return all(ifeval.check(ids, kwargs, "", text)[0])


@pytest.mark.parametrize("instruction_id", sorted(constraint_prompts.MAKERS))
def test_every_constraint_type_is_fixed_and_verified(instruction_id):
    assert set(repair.SUPPORTED_IDS) == set(constraint_prompts.MAKERS)
    for k in range(4):  # several kwargs draws per type (word limits, bullet counts, phrases ...)
        kwargs = [constraint_prompts.MAKERS[instruction_id](random.Random(k)).kwargs]
        for response in RESPONSES:
            fixed = repair.fix_response(response, [instruction_id], kwargs)
            assert fixed is not None, (instruction_id, kwargs, response)
            assert passes([instruction_id], kwargs, fixed)
            if passes([instruction_id], kwargs, response):
                assert fixed == response  # nothing to do: unchanged
            else:
                assert fixed != response


def test_fixes_are_minimal_where_the_rule_is_simple():
    f = repair.fix_response
    assert f(PARAGRAPH, ["change_case:english_lowercase"], [{}]) == PARAGRAPH.lower()
    assert f(PARAGRAPH, ["change_case:english_capital"], [{}]) == PARAGRAPH.upper()
    assert f(PARAGRAPH, ["punctuation:no_comma"], [{}]) == PARAGRAPH.replace(",", "")
    assert f(PARAGRAPH, ["startend:quotation"], [{}]) == f'"{PARAGRAPH}"'
    no_very = f(PARAGRAPH, ["keywords:forbidden_words"], [{"forbidden_words": ["very", "really"]}])
    assert no_very == PARAGRAPH.replace(" really", "").replace(" very", "")
    titled = f(PARAGRAPH, ["detectable_format:title"], [{}])
    assert re.match(r"<<[^\n]+>>\n\n", titled) and titled.endswith(PARAGRAPH)
    ended = f(PARAGRAPH, ["startend:end_checker"], [{"end_phrase": "until next time."}])
    assert ended == PARAGRAPH + " until next time."
    ps = f(PARAGRAPH, ["detectable_content:postscript"], [{"postscript_marker": "P.S."}])
    assert ps.startswith(PARAGRAPH) and ps.split("\n")[-1].startswith("P.S. ")
    short = f(PARAGRAPH, ["length_constraints:number_words"], [{"relation": "less than", "num_words": 30}])
    assert PARAGRAPH.startswith(short) and short.endswith(".")  # cut at a sentence boundary
    bullets = f(PARAGRAPH, ["detectable_format:number_bullet_lists"], [{"num_bullets": 3}])
    assert [line[:2] for line in bullets.split("\n")] == ["* "] * 3
    assert re.sub(r"\s+", " ", bullets.replace("* ", "")) == PARAGRAPH  # same content, regrouped


COMBOS = [
    (["detectable_format:number_bullet_lists", "detectable_format:title", "detectable_content:postscript",
      "startend:end_checker"],
     [{"num_bullets": 4}, {}, {"postscript_marker": "P.S."}, {"end_phrase": "until next time."}]),
    (["length_constraints:number_sentences", "length_constraints:number_words", "keywords:existence",
      "detectable_content:number_placeholders"],
     [{"relation": "less than", "num_sentences": 4}, {"relation": "at least", "num_words": 80},
      {"keywords": ["journey", "patience"]}, {"num_placeholders": 2}]),
    (["change_case:english_lowercase", "length_constraints:number_words", "startend:quotation",
      "detectable_format:number_bullet_lists"],
     [{}, {"relation": "less than", "num_words": 40}, {}, {"num_bullets": 2}]),
    (["keywords:forbidden_words", "length_constraints:number_sentences", "detectable_content:postscript",
      "startend:end_checker"],
     [{"forbidden_words": ["simply", "really"]}, {"relation": "less than", "num_sentences": 4},
      {"postscript_marker": "P.S."}, {"end_phrase": "any other questions?"}]),
    (["change_case:english_capital", "punctuation:no_comma", "detectable_format:title",
      "detectable_content:number_placeholders"], [{}, {}, {}, {"num_placeholders": 1}]),
]  # fmt: skip


@pytest.mark.parametrize("ids,kwargs", COMBOS)
def test_combined_fixes_keep_each_other_valid(ids, kwargs):
    for response in RESPONSES:
        fixed = repair.fix_response(response, ids, kwargs)
        assert fixed is not None and passes(ids, kwargs, fixed), (ids, response, fixed)


def test_fixer_returns_none_when_impossible_and_rejects_bad_input():
    both = ["keywords:existence", "keywords:forbidden_words"]
    assert repair.fix_response(PARAGRAPH, both, [{"keywords": ["bees"]}, {"forbidden_words": ["bees"]}]) is None
    tiny = ["length_constraints:number_words", "detectable_format:number_bullet_lists", "detectable_format:title"]
    tiny_kwargs = [{"relation": "less than", "num_words": 4}, {"num_bullets": 4}, {}]
    assert repair.fix_response(PARAGRAPH, tiny, tiny_kwargs) is None
    assert repair.fix_response("", ["punctuation:no_comma"], [{}]) is None  # blank never passes strictly
    with pytest.raises(ValueError, match="unsupported instruction id 'detectable_format:json_format'"):
        repair.fix_response(PARAGRAPH, ["detectable_format:json_format"], [{}])
    with pytest.raises(ValueError, match="num_bullets"):
        repair.fix_response(PARAGRAPH, ["detectable_format:number_bullet_lists"], [{}])


def test_critique_format_and_labels():
    ids = ["punctuation:no_comma", "length_constraints:number_words"]
    kwargs = [{}, {"relation": "less than", "num_words": 30}]
    strict = ifeval.check(ids, kwargs, "", PARAGRAPH)[0]
    assert strict == [False, False]
    text = bootstrap.critique_text(ids, kwargs, None, strict, response=PARAGRAPH)
    lines = text.split("\n")
    n_words = len(re.findall(r"\w+", PARAGRAPH))
    assert lines[1] == "1. The response uses no commas: not met: it contains 7 comma(s)."
    assert lines[2] == f"2. The response has fewer than 30 words: not met: it has {n_words} words."
    assert lines[-1] == "Final Judgement: No" and parse_judgement(text) == "no"
    ok = bootstrap.critique_text(ids, kwargs, ["No commas.", "Short."], [True, True])
    assert ok.split("\n")[1:] == ["1. No commas: met.", "2. Short: met.", "Final Judgement: Yes"]
    assert parse_judgement(ok) == "yes"
    with pytest.raises(ValueError, match="2 ids, 2 kwargs, 1 results"):
        bootstrap.critique_text(ids, kwargs, None, [True])


@pytest.fixture(scope="module")
def generated():
    prompts = constraint_prompts.generate_constraint_prompts(200, seed=0)
    responses = [bootstrap.synthetic_responses(p, 2, seed=0) for p in prompts]
    return prompts, responses


def test_critique_labels_agree_with_the_checker(generated):
    prompts, responses = generated
    labels = set()
    for p, rs in zip(prompts, responses):
        for r in rs:
            strict = ifeval.check(p["instruction_id_list"], p["kwargs"], p["prompt"], r)[0]
            text = bootstrap.critique_text(p["instruction_id_list"], p["kwargs"], None, strict, response=r)
            label = parse_judgement(text)
            assert label == ("yes" if all(strict) else "no")
            lines = text.split("\n")[1:-1]
            assert [": not met" not in line for line in lines] == strict
            labels.add(label)
    assert labels == {"yes", "no"}  # the synthetic responses exercise both


def test_fix_rate_on_generated_prompts(generated):
    prompts, responses = generated
    raw = [bootstrap.synthetic_responses({**p, "instruction_id_list": [], "kwargs": []}, 1, seed=1) for p in prompts]
    for name, pools in (("synthetic", responses), ("raw drafts", raw)):
        failing = fixed = 0
        for p, rs in zip(prompts, pools):
            for r in rs:
                ids, kw = p["instruction_id_list"], p["kwargs"]
                if passes(ids, kw, r):
                    continue
                failing += 1
                out = repair.fix_response(r, ids, kw)
                if out is not None:
                    assert passes(ids, kw, out)
                    fixed += 1
        print(f"fix rate ({name}): {fixed}/{failing} = {fixed / failing:.3f}")
        assert failing >= 100 and fixed / failing >= 0.9


def test_examples_round_trip_and_are_balanced(generated):
    prompts, responses = generated
    pools, counts = bootstrap.bootstrap_examples(prompts, responses, seed=0)
    by_key = {str(p["key"]): p for p in prompts}
    assert counts["responses"] == 400 and counts["passing"] + counts["failing"] == 400
    assert counts["fixed"] + counts["unfixable"] == counts["failing"] and counts["fixed"] >= 0.9 * counts["failing"]
    yes, no = len(pools["judge_yes"]), len(pools["judge_no"])
    assert min(yes, no) > 0 and max(yes, no) <= 2 * min(yes, no)
    # every response is judged, and every verified fix is judged again as a "Yes" (then de-duplicated and balanced)
    assert yes + no + counts["judge_dropped"] <= counts["passing"] + counts["failing"] + counts["fixed"]
    assert yes + counts["judge_dropped"] > counts["passing"]
    for pool, label in (("judge_yes", "yes"), ("judge_no", "no")):
        for ex in pools[pool]:
            p = by_key[ex["prompt_id"]]
            user, target = ex["messages"]
            assert ex["pool"] == f"bootstrap_{pool}" and user["role"] == "user" and target["role"] == "assistant"
            assert parse_judgement(target["content"]) == label
            response = user["content"].split("[Response]\n", 1)[1].split("\n\nHow to judge:")[0]
            assert [user] == judge_messages(p["prompt"], response)
            assert all(ifeval.check(p["instruction_id_list"], p["kwargs"], "", response)[0]) == (label == "yes")
    assert len(pools["refine"]) == counts["fixed"]
    for ex in pools["refine"]:
        p = by_key[ex["prompt_id"]]
        msgs = ex["messages"]
        assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant"]
        response = msgs[0]["content"].split("[Response]\n", 1)[1].split("\n\nHow to judge:")[0]
        assert msgs[:3] == refine_messages(p["prompt"], response, msgs[1]["content"])
        assert parse_judgement(msgs[1]["content"]) == "no"
        refined = parse_refinement(msgs[3]["content"])
        assert refined is not None and refined != response and passes(p["instruction_id_list"], p["kwargs"], refined)
    judged_yes = {(ex["prompt_id"], ex["messages"][0]["content"]) for ex in pools["judge_yes"]}
    for ex in pools["refine"]:  # the repaired answer is also a judged "Yes" example (the pools are balanced here)
        p = by_key[ex["prompt_id"]]
        fixed_prompt = judge_messages(p["prompt"], parse_refinement(ex["messages"][3]["content"]))[0]["content"]
        assert (ex["prompt_id"], fixed_prompt) in judged_yes
    actor_targets = {(ex["prompt_id"], ex["messages"][1]["content"]) for ex in pools["actor"]}
    for ex in pools["refine"]:
        assert (ex["prompt_id"], parse_refinement(ex["messages"][3]["content"])) in actor_targets
    for ex in pools["actor"]:
        p = by_key[ex["prompt_id"]]
        assert ex["messages"][0] == {"role": "user", "content": p["prompt"]}
        assert passes(p["instruction_id_list"], p["kwargs"], ex["messages"][1]["content"])


def test_determinism(generated):
    prompts, responses = generated
    prompts, responses = prompts[:40], responses[:40]
    assert [bootstrap.synthetic_responses(p, 2, seed=0) for p in prompts] == responses
    a = bootstrap.bootstrap_examples(prompts, responses, seed=5)
    assert a == bootstrap.bootstrap_examples(prompts, responses, seed=5)
    b = bootstrap.bootstrap_examples(prompts, responses, seed=6)
    assert a[1] == b[1] and a[0]["refine"] != b[0]["refine"]  # same data, other order
    assert sorted(map(str, a[0]["refine"])) == sorted(map(str, b[0]["refine"]))


def test_bad_input_is_named():
    p = constraint_prompts.generate_constraint_prompts(2, seed=0)
    with pytest.raises(ValueError, match="2 prompts but 1 response lists"):
        bootstrap.bootstrap_examples(p, [["x"]], seed=0)
    with pytest.raises(ValueError, match=r"prompts\[1\]: missing key 'kwargs'"):
        bootstrap.bootstrap_examples([p[0], {"prompt": "x", "instruction_id_list": []}], [[], []], seed=0)
    with pytest.raises(ValueError, match=r"responses_per_prompt\[0\]: expected a list of responses"):
        bootstrap.bootstrap_examples(p[:1], ["one response"], seed=0)
    with pytest.raises(ValueError, match=r"responses_per_prompt\[0\]\[1\]: expected a string"):
        bootstrap.bootstrap_examples(p[:1], [["ok", None]], seed=0)
    bad = {**p[0], "instruction_id_list": ["language:response_language"], "kwargs": [{"language": "en"}]}
    with pytest.raises(ValueError, match=r"prompts\[0\]: unsupported instruction id 'language:response_language'"):
        bootstrap.bootstrap_examples([bad], [["x"]], seed=0)


def test_refiner_mixture_keeps_every_refinement_and_sets_their_share():
    pools = {
        "refine": [{"id": f"r{i}"} for i in range(6)],
        "judge_yes": [{"id": f"y{i}"} for i in range(10)],
        "judge_no": [{"id": f"n{i}"} for i in range(3)],
        "actor": [],
    }
    mix = bootstrap.refiner_mixture(pools, 0.6, seed=1)
    ids = [m["id"] for m in mix]
    assert len(ids) == len(set(ids)) == 10  # 6 refinements are 60% of 10: 4 judgments
    assert {i for i in ids if i[0] == "r"} == {f"r{i}" for i in range(6)}
    assert sorted(i for i in ids if i[0] != "r") == ["n0", "n1", "y0", "y1"]  # alternately Yes and No
    assert mix == bootstrap.refiner_mixture(pools, 0.6, seed=1) and mix != bootstrap.refiner_mixture(pools, 0.6, seed=2)
    # too few judgments for the share: all of them; share 1: refinements only
    assert len(bootstrap.refiner_mixture(pools, 0.2, seed=1)) == 6 + 13
    assert {m["id"][0] for m in bootstrap.refiner_mixture(pools, 1.0, seed=1)} == {"r"}
    with pytest.raises(ValueError, match="refine_share"):
        bootstrap.refiner_mixture(pools, 0.0, seed=1)
