import json

import pytest

from spar_jax.judge.generation import Generator, SamplingParams, derive_seed
from spar_jax.judge.votes import Judgement, judge
from spar_jax.spar.mining import MiningConfig, PromptRecord, TreeRoot, choose_root, mine, roots

from spar_fakes import TEMPLATES, Completion, Result, ScriptedEngine, vote_text

SAMPLING = SamplingParams(max_new_tokens=16, temperature=0.7)


def J(pattern):
    return Judgement.from_texts([vote_text(ch, str(i)) for i, ch in enumerate(pattern)])


@pytest.mark.parametrize(
    "pattern, label, value, critique_index",
    [
        ("yyynn", "yes", 0.6, 0),
        ("nyyyn", "yes", 0.6, 1),
        ("nnnyy", "no", 0.4, 0),
        ("yynnx", None, 0.5, None),  # tie among valid votes: dropped
        ("xxxxx", None, None, None),  # nothing valid
        ("xxnxx", "no", 0.0, 2),  # invalid votes are ignored
        ("xyxxx", "yes", 1.0, 1),
        ("yyyyy", "yes", 1.0, 0),
    ],
)
def test_vote_aggregation(pattern, label, value, critique_index):
    j = J(pattern)
    assert j.label == label
    assert j.value == value
    assert j.critique == (None if critique_index is None else j.texts[critique_index])
    assert j.is_tie == (label is None)
    assert j.mixed == ("y" in pattern and "n" in pattern)
    assert Judgement.from_dict(json.loads(json.dumps(j.to_dict()))) == j


def test_judgement_validation():
    with pytest.raises(ValueError, match="2 texts but 1 votes"):
        Judgement(("a", "b"), ("yes",))
    with pytest.raises(ValueError, match="votes must be"):
        Judgement(("a",), ("maybe",))


def test_judge_is_one_call_with_n_equal_k():
    engine = ScriptedEngine(judge=lambda i, r, n: [vote_text("y" if r == "good" else "n")] * n)
    assert isinstance(engine, Generator)
    items = [("i1", "good"), ("i2", "bad"), ("i3", "good")]
    out = judge(engine, items, k=4, sampling=SAMPLING, seed=7, templates=TEMPLATES)
    assert [j.label for j in out] == ["yes", "no", "yes"]
    assert all(len(j.votes) == 4 for j in out)
    assert len(engine.calls) == 1
    call = engine.calls[0]
    assert call.n == 4 and call.seed == 7 and call.sampling["temperature"] == 0.7
    assert engine.judged(call) == ["good", "bad", "good"]
    assert judge(engine, [], k=4, sampling=SAMPLING, seed=7) == [] and len(engine.calls) == 1


class ShortEngine:
    def generate(self, requests, *, n=1, **kwargs):
        return [Result(tuple(Completion("x") for _ in range(n - 1))) for _ in requests]


def test_wrong_shaped_engine_output_is_an_error():
    with pytest.raises(ValueError, match="returned 2 completions for request 0, expected n=3"):
        judge(ShortEngine(), [("i", "r")], k=3, sampling=SAMPLING, seed=0)


def test_choose_root_rules():
    assert choose_root(["yes", None, "yes"], seed=0, prompt_id="p") is None
    assert choose_root(["yes", "no", None], seed=0, prompt_id="p") == 1
    picks = {choose_root(["no", "yes", "no", "no", None], seed=s, prompt_id="p") for s in range(50)}
    assert picks == {0, 2, 3}  # only majority-No samples, each reachable
    assert choose_root(["no", "no"], seed=3, prompt_id="p") == choose_root(["no", "no"], seed=3, prompt_id="p")


def actor_script(instruction, n):
    return [f"{instruction}/a{i}" for i in range(n)]


# Votes per actor response "<instruction>/a<i>": "p0" fails twice; "p1" has only a tie and passes;
# "p2" fails once (with an invalid vote); "p3" fails on every sample.
VOTES = {
    "p0": ["nnnyy", "yyyyy", "nnnnn", "yyyxx", "yynnx"],
    "p1": ["yynnx", "yyyyy", "yyyyn", "xxxxx", "yyynn"],
    "p2": ["yyyyy", "yyyyy", "xnnny", "yyyyy", "yyyyy"],
    "p3": ["nnnnn"] * 5,
}


def mining_engines():
    actor = ScriptedEngine(actor=actor_script)

    def judge_script(instruction, response, n):
        return [vote_text(ch, f"{response}#{i}") for i, ch in enumerate(VOTES[instruction][int(response[-1])])]

    return actor, ScriptedEngine(judge=judge_script)


def test_mine_rules_and_calls():
    actor, refiner = mining_engines()
    records = mine(actor, refiner, ["p0", "p1", "p2", "p3"], ids=["a", "b", "c", "d"], seed=1, templates=TEMPLATES)
    assert len(actor.calls) == 1 and actor.calls[0].n == 5 and actor.calls[0].kind == "actor"
    assert actor.calls[0].sampling["temperature"] == 0.9 and actor.calls[0].sampling["top_p"] == 0.9
    assert len(refiner.calls) == 1 and refiner.calls[0].n == 5 and len(refiner.calls[0].requests) == 20
    assert actor.calls[0].requests[0] == ({"role": "user", "content": "p0"},)
    assert [r.prompt_id for r in records] == ["a", "b", "c", "d"]
    assert all(len(r.samples) == 5 for r in records)
    assert [s.judgement.label for s in records[0].samples] == ["no", "yes", "no", "yes", None]
    assert records[0].root_index in (0, 2)
    assert records[1].root_index is None  # ties and passes only
    assert records[2].root_index == 2
    root = records[2].root
    assert root.response == "p2/a2" and root.instruction == "p2" and root.prompt_id == "c"
    assert root.critique == records[2].samples[2].judgement.texts[1]  # first agreeing vote (vote 0 was invalid)
    assert [r.prompt_id for r in roots(records)] == ["a", "c", "d"]
    for r in records:
        assert PromptRecord.from_dict(json.loads(json.dumps(r.to_dict()))) == r


def test_mine_root_choice_is_seeded_and_batch_independent():
    def run(instructions, ids, seed):
        return {
            r.prompt_id: r.root_index
            for r in mine(*mining_engines(), instructions, ids=ids, seed=seed, templates=TEMPLATES)
        }

    full = run(["p0", "p3", "p2"], ["x", "y", "z"], seed=5)
    assert full == run(["p0", "p3", "p2"], ["x", "y", "z"], seed=5)
    assert run(["p3"], ["y"], seed=5)["y"] == full["y"]  # same id and seed, different batch
    picks = {run(["p3"], ["y"], seed=s)["y"] for s in range(30)}
    assert picks == {0, 1, 2, 3, 4}


def test_mine_config_and_ids_validation():
    with pytest.raises(ValueError, match="prompt ids must be unique"):
        mine(*mining_engines(), ["p0", "p1"], ids=["a", "a"], templates=TEMPLATES)
    with pytest.raises(ValueError, match="2 ids for 1 instructions"):
        mine(*mining_engines(), ["p0"], ids=["a", "b"], templates=TEMPLATES)
    with pytest.raises(ValueError, match="MiningConfig.k_votes"):
        MiningConfig(k_votes=0)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(max_new_tokens=4, top_p=0.0)


def test_derive_seed_is_stable_and_distinct():
    assert derive_seed(0, "judge", 1, 0) == derive_seed(0, "judge", 1, 0)
    assert len({derive_seed(0, "judge", d, a) for d in range(4) for a in range(4)}) == 16
    assert 0 <= derive_seed(123, "x") < 2**31


def test_tree_root_round_trip_and_missing_key():
    record = mine(*mining_engines(), ["p3"], ids=["d"], seed=0, templates=TEMPLATES)[0]
    d = json.loads(json.dumps(record.root.to_dict()))
    assert TreeRoot.from_dict(d) == record.root
    del d["judgement"]
    with pytest.raises(ValueError, match="missing key 'judgement'"):
        TreeRoot.from_dict(d)


def test_a_sample_cut_by_the_length_limit_is_never_a_root():
    from spar_jax.spar.mining import choose_root

    labels = ["no", "no", "yes"]
    for seed in range(20):
        assert choose_root(labels, seed=seed, prompt_id="p", finish_reasons=["length", "stop", "stop"]) == 1
    assert choose_root(["no", "yes"], seed=0, prompt_id="p", finish_reasons=["length", "stop"]) is None
