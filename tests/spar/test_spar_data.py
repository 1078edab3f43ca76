import json
import os

import pytest

from spar_jax.judge.templates import judge_messages, refine_messages
from spar_jax.judge.votes import Judgement
from spar_jax.spar.data import (
    MixtureConfig,
    dpo_pairs,
    finalize_pool,
    first_user_message,
    load_jsonl,
    refiner_mixture,
    save_jsonl,
    tree_judgement_examples,
)
from spar_jax.spar.mining import PromptRecord, Sample, TreeRoot
from spar_jax.spar.tree_search import Node, SearchConfig, TreeRecord, search

from spar_fakes import TEMPLATES, TreeWorld, vote_text


def J(pattern, tag):
    return Judgement.from_texts([vote_text(ch, f"{tag}#{i}") for i, ch in enumerate(pattern)])


def tree(pid, children, success=None):
    """children: (parent index, response, vote pattern); the root is "<pid>-root" with votes "nnnny"."""
    nodes = [Node(0, None, 0, f"{pid}-root", None, J("nnnny", f"{pid}-root"), "root", 0)]
    for parent, response, pattern in children:
        j = J(pattern, response)
        nodes.append(
            Node(
                len(nodes),
                parent,
                nodes[parent].depth + 1,
                response,
                f"reflection\n[[start]]\n{response}\n[[end]]",
                j,
                "tie" if j.is_tie else "ok",
                1,
            )
        )
    return TreeRecord(pid, f"instruction {pid}", "bfs", tuple(nodes), success, 1, 3, 0, 15)


TREES = [
    tree(
        "A",
        [(0, "a1", "nnnnn"), (0, "a2", "nnnny"), (0, "a3", "yyyyn"), (0, "a4", "yyynn"), (0, "a5", "yynnx")],
        success=3,
    ),
    tree("B", [(0, "b1", "nnnyy"), (0, "b2", "nnnny"), (1, "b1", "nnnyy")]),  # b1 repeated at depth 2
    tree("C", [(0, "c1", "nnnny"), (0, "c2", "nnnnn"), (1, "c11", "yyyyy")], success=3),
]
MINED = [
    PromptRecord(
        "A",
        "instruction A",
        tuple(
            Sample(f"s{i}", "stop", J(p, f"s{i}")) for i, p in enumerate(["nnnyy", "yyyyn", "nnnnn", "yyyyy", "yynnx"])
        ),
        0,
    ),
    PromptRecord("D", "instruction D", (Sample("d0", "length", J("xxnyy", "d0")),), None),
]


def test_dpo_pairs_from_successful_trees_only():
    pairs = dpo_pairs(TREES)
    assert pairs == [
        {
            "prompt": [{"role": "user", "content": "instruction A"}],
            "chosen": [{"role": "assistant", "content": "a3"}],
            "rejected": [{"role": "assistant", "content": "A-root"}],
            "prompt_id": "A",
            "depth": 1,
        },
        {
            "prompt": [{"role": "user", "content": "instruction C"}],
            "chosen": [{"role": "assistant", "content": "c11"}],
            "rejected": [{"role": "assistant", "content": "C-root"}],
            "prompt_id": "C",
            "depth": 2,
        },
    ]


def pools(mixture):
    out = {}
    for ex in mixture:
        out.setdefault(ex["pool"], []).append(ex)
    return out


def test_mixture_pools_filters_and_targets():
    mixture, counts = refiner_mixture(TREES, MINED, seed=0, templates=TEMPLATES)
    assert counts == {"refine": 2, "tree_judge_yes": 1, "tree_judge_no": 2, "actor_judge_no": 1, "actor_judge_yes": 2}
    by_pool = pools(mixture)
    c = next(ex for ex in by_pool["refine"] if ex["prompt_id"] == "C")
    c1 = TREES[2].nodes[1]
    assert c["messages"] == [
        *refine_messages("instruction C", "c1", c1.critique, TEMPLATES),
        {"role": "assistant", "content": "reflection\n[[start]]\nc11\n[[end]]"},
    ]
    assert c1.critique.startswith("critique c1#0")  # the parent's majority-agreeing critique
    a = next(ex for ex in by_pool["refine"] if ex["prompt_id"] == "A")
    assert a["messages"][1]["content"] == TREES[0].root.critique
    (yes,) = by_pool["tree_judge_yes"]  # 0.5 < V < 1: a3 (0.8) or a4 (0.6); c11 (1.0) and the tie a5 are out
    judged = yes["messages"][0]["content"]
    assert judged in {judge_messages("instruction A", r, TEMPLATES)[0]["content"] for r in ("a3", "a4")}
    assert yes["messages"][1]["content"].startswith("critique a3#0" if "a3" in judged else "critique a4#0")
    no_responses = sorted(
        ex["messages"][0]["content"].split("<r>")[1].split("</r>")[0] for ex in by_pool["tree_judge_no"]
    )
    # 0 < V < 0.5, roots excluded, one random node per tree (A: a2; B: b1 or b2; C: c1 only), and de-duplicated
    # across pools: C's refine example already starts with the judge prompt on c1, so c1 is not taken again.
    assert no_responses[0] == "a2" and no_responses[1] in ("b1", "b2") and len(no_responses) == 2
    for ex in by_pool["tree_judge_no"]:  # target = the first vote agreeing with the majority (vote 0 is a No)
        response = ex["messages"][0]["content"].split("<r>")[1].split("</r>")[0]
        assert ex["messages"][1]["content"] == f"critique {response}#0\nFinal Judgement: No"
    actor = {
        ex["messages"][0]["content"].split("<r>")[1].split("</r>")[0]: ex["pool"]
        for ex in by_pool["actor_judge_no"] + by_pool["actor_judge_yes"]
    }
    assert actor == {"s0": "actor_judge_no", "s1": "actor_judge_yes", "d0": "actor_judge_yes"}
    s0 = by_pool["actor_judge_no"][0]["messages"][1]["content"]
    assert s0 == MINED[0].samples[0].judgement.critique and s0.endswith("Final Judgement: No")


def test_one_random_node_per_tree_is_seeded():
    picks = {
        tree_judgement_examples(
            TREES, pool="tree_judge_yes", low=0.5, high=1.0, per_tree=1, seed=s, templates=TEMPLATES
        )[0]["messages"][0]["content"]
        for s in range(20)
    }
    assert len(picks) == 2
    assert len(tree_judgement_examples(TREES, pool="p", low=0.5, high=1.0, per_tree=None, seed=0)) == 2
    again = [refiner_mixture(TREES, MINED, seed=3, templates=TEMPLATES)[0] for _ in range(2)]
    assert again[0] == again[1]


def test_caps_deduplication_and_shuffle():
    examples = [
        {"messages": [{"role": "user", "content": f"u{i % 7}"}, {"role": "assistant", "content": str(i)}]}
        for i in range(30)
    ]
    out = finalize_pool(examples, cap=5, seed=1)
    assert len(out) == 5 and len({first_user_message(e) for e in out}) == 5
    assert len(finalize_pool(examples, cap=100, seed=1)) == 7  # cap counts unique examples
    assert finalize_pool(examples, cap=0, seed=1) == []
    orders = {tuple(e["messages"][1]["content"] for e in finalize_pool(examples, cap=7, seed=s)) for s in range(5)}
    assert len(orders) > 1  # shuffled, and which duplicate survives depends on the seed
    mixture, counts = refiner_mixture(
        TREES, MINED, config=MixtureConfig(cap_tree_judge_no=2, cap_refine=1), templates=TEMPLATES
    )
    assert counts["tree_judge_no"] == 2 and counts["refine"] == 1 and len(mixture) == sum(counts.values())
    with pytest.raises(ValueError, match="MixtureConfig.cap_refine"):
        MixtureConfig(cap_refine=-1)
    with pytest.raises(ValueError, match="tree_judge_yes_per_tree"):
        MixtureConfig(tree_judge_yes_per_tree=0)


def test_end_to_end_from_search_records():
    world = TreeWorld(yes={"x.1": 4, "y.0.2": 3, "y.1": 2})
    roots = [TreeRoot(p, f"instr {p}", p, J("nnnyy", p)) for p in ("x", "y", "z")]
    out = search(world, roots, config=SearchConfig(max_depth=2), templates=TEMPLATES)
    pairs = dpo_pairs(out.trees)
    assert [(p["prompt_id"], p["chosen"][0]["content"], p["depth"]) for p in pairs] == [
        ("x", "x.1", 1),
        ("y", "y.0.2", 2),
    ]
    mixture, counts = refiner_mixture(out.trees, [], templates=TEMPLATES)
    assert counts["refine"] == 2 and counts["tree_judge_yes"] == 2 and counts["tree_judge_no"] == 1  # y.1 (0.4)


def test_jsonl_round_trip_atomic_and_datasets_loadable(tmp_path):
    import datasets

    mixture, _ = refiner_mixture(TREES, MINED, templates=TEMPLATES)
    path = tmp_path / "sub" / "refiner_sft.jsonl"
    save_jsonl([{"old": 1}], path)
    save_jsonl(mixture, path)
    assert load_jsonl(path) == mixture
    assert os.listdir(path.parent) == ["refiner_sft.jsonl"]  # no temp file left behind
    ds = datasets.load_dataset("json", data_files=str(path), split="train")
    assert len(ds) == len(mixture) and ds[0]["messages"] == mixture[0]["messages"]
    pair_path = tmp_path / "dpo.jsonl"
    save_jsonl(dpo_pairs(TREES), pair_path)
    ds = datasets.load_dataset("json", data_files=str(pair_path), split="train")
    assert ds.column_names == ["prompt", "chosen", "rejected", "prompt_id", "depth"]
    assert ds[1]["chosen"] == [{"role": "assistant", "content": "c11"}]


def test_load_jsonl_errors_name_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"a": 1}) + "\n\n{oops\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:3: malformed JSON"):
        load_jsonl(path)
    path.write_text("[1, 2]\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: expected a JSON object"):
        load_jsonl(path)


def test_pairs_with_equal_texts_after_stripping_are_dropped():
    same = tree("E", [(0, "  E-root\n", "yyyyy")], success=1)  # the "refinement" only changed whitespace
    assert [p["prompt_id"] for p in dpo_pairs([same, *TREES])] == ["A", "C"]
    from spar_jax.spar.data import same_text

    assert same_text(" x\n", "x") and not same_text("x", "x.")


def test_sample_pairs_pair_a_yes_with_a_no_that_was_not_cut():
    from spar_jax.spar.data import sample_pairs

    rec = PromptRecord(
        "P",
        "instruction P",
        (
            Sample("yes-1", "stop", J("yyyyn", "y1")),
            Sample("no-cut", "length", J("nnnnn", "nc")),
            Sample("no-ok", "stop", J("nnnyy", "no")),
            Sample("tie", "stop", J("yynnx", "t")),
        ),
        2,
    )
    only_cut = PromptRecord(
        "Q", "instruction Q", (Sample("y", "stop", J("yyyyy", "y")), Sample("n", "length", J("nnnnn", "n"))), None
    )
    all_yes = PromptRecord("R", "instruction R", (Sample("y", "stop", J("yyyyy", "y")),), None)
    pairs = sample_pairs([rec, only_cut, all_yes], seed=0)
    assert pairs == [
        {
            "prompt": [{"role": "user", "content": "instruction P"}],
            "chosen": [{"role": "assistant", "content": "yes-1"}],
            "rejected": [{"role": "assistant", "content": "no-ok"}],
            "prompt_id": "P",
            "depth": 0,
        }
    ]
