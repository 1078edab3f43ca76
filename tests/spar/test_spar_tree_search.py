import json
from collections import Counter

import pytest

from spar_jax.judge.votes import Judgement
from spar_jax.spar.mining import TreeRoot
from spar_jax.spar.tree_search import SearchConfig, TreeRecord, search, success_by_depth

from spar_fakes import TEMPLATES, ScriptedEngine, TreeWorld, vote_text

BFS = SearchConfig()
DFS = SearchConfig(strategy="dfs")


def root(name="r", pattern="nnnnn"):
    return TreeRoot(
        f"id-{name}",
        f"instruction for {name}",
        name,
        Judgement.from_texts([vote_text(ch, f"{name}#{i}") for i, ch in enumerate(pattern)]),
    )


def run(world, roots, config=BFS, seed=0):
    return search(world, roots, config=config, seed=seed, templates=TEMPLATES)


def expanded(call):
    return ScriptedEngine.judged(call)  # the parents a refine call expanded


@pytest.mark.parametrize("n_trees", [1, 7])
def test_bfs_worst_case_counts_and_two_calls_per_level(n_trees):
    world = TreeWorld()
    out = run(world, [root(f"r{t}") for t in range(n_trees)])
    assert [(c.kind, c.step, c.attempt) for c in out.calls] == [
        ("refine", 1, 0),
        ("judge", 1, 0),
        ("refine", 2, 0),
        ("judge", 2, 0),
        ("refine", 3, 0),
        ("judge", 3, 0),
    ]
    assert len(world.calls) == 6
    assert [(c.kind, c.n, len(c.requests)) for c in world.calls] == [
        ("refine", 3, n_trees),
        ("judge", 5, 3 * n_trees),
        ("refine", 3, 2 * n_trees),
        ("judge", 5, 6 * n_trees),
        ("refine", 3, 2 * n_trees),
        ("judge", 5, 6 * n_trees),
    ]
    assert len({c.seed for c in world.calls}) == 6
    for t in out.trees:
        assert not t.success and t.success_depth is None
        assert (t.n_refinements, t.n_judgments, t.n_expansions, len(t.nodes)) == (15, 75, 5, 16)
        assert Counter(n.depth for n in t.nodes) == {0: 1, 1: 3, 2: 6, 3: 6}


def test_bfs_early_stop_at_depth_one():
    world = TreeWorld(yes={"r.1": 4, "r.2": 5})
    out = run(world, [root()])
    (t,) = out.trees
    assert t.success and t.success_depth == 1
    assert t.nodes[t.success_index].response == "r.2"  # the best child, not the first passing one
    assert t.path() == (0, 3) and t.answer == "r.2"
    assert (t.n_refinements, t.n_judgments) == (3, 15)
    assert len(world.calls) == 2


def test_bfs_keeps_top_two_by_value_and_passes_strictly_above_threshold():
    world = TreeWorld(yes={"r.1": 2, "r.2": 2, "r.0": 1, "r.2.1": 2, "r.1.2": 1, "r.1.2.0": 3, "r.2.1.1": 3})
    out = run(world, [root()], config=SearchConfig(threshold=0.6))  # V = 0.6 does not pass 0.6
    refine_calls = [c for c in world.calls if c.kind == "refine"]
    assert [expanded(c) for c in refine_calls] == [["r"], ["r.1", "r.2"], ["r.2.1", "r.1.2"]]
    (t,) = out.trees
    assert not t.success
    assert t.nodes[t.best_index].response == "r.2.1.1"  # the earliest node with the best value (0.6)
    out = run(TreeWorld(yes=world.yes), [root()])  # default threshold 0.5: r.2.1.1 (V 0.6) passes at depth 3
    (t,) = out.trees
    assert t.success_depth == 3 and t.nodes[t.success_index].response == "r.2.1.1"
    assert [t.nodes[i].response for i in t.path()] == ["r", "r.2", "r.2.1", "r.2.1.1"]
    assert [t.nodes[i].value for i in t.path()][1:] == [0.4, 0.4, 0.6]


def test_tie_rejudging_resolves_or_drops():
    world = TreeWorld(rounds={"r.0": ["yynnx", "yyynn"], "r.1": ["xxxxx"]})
    out = run(world, [root()])
    (t,) = out.trees
    assert t.success and t.nodes[t.success_index].response == "r.0"
    r0, r1, r2 = t.nodes[1:4]
    assert (r0.status, r0.judge_rounds, r0.value) == ("ok", 2, 0.6)
    assert (r1.status, r1.judge_rounds, r1.value) == ("tie", 4, None)  # 1 + 3 re-judges, then dropped
    assert t.n_judgments == 15 + 5 + 5 * 3
    judge_calls = [(c.attempt, c.n_requests) for c in out.calls if c.kind == "judge"]
    assert judge_calls == [(0, 3), (1, 2), (2, 1), (3, 1)]


def test_dropped_ties_are_never_kept():
    world = TreeWorld(rounds={"r.0": ["yynnx"], "r.1": ["nnyyx"]}, yes={"r.2": 1})
    out = run(world, [root()], config=SearchConfig(max_rejudges=1, max_depth=2))
    refine_calls = [c for c in world.calls if c.kind == "refine"]
    assert expanded(refine_calls[1]) == ["r.2"]  # only one judged child survives
    (t,) = out.trees
    assert [n.status for n in t.nodes[1:4]] == ["tie", "tie", "ok"]
    assert t.nodes[t.best_index].response == "r.2"


@pytest.mark.parametrize("n_trees", [1, 7])
def test_calls_per_level_stay_two_with_mixed_outcomes(n_trees):
    world = TreeWorld(yes={"r1.0": 5, "r3.1.2": 4})  # tree 1 passes at depth 1, tree 3 at depth 2
    out = run(world, [root(f"r{i}") for i in range(n_trees)])
    assert len(world.calls) == len(out.calls)
    assert Counter(c.step for c in out.calls) == {1: 2, 2: 2, 3: 2}
    assert [c.kind for c in world.calls] == ["refine", "judge"] * 3
    refine_calls = [c for c in world.calls if c.kind == "refine"]
    if n_trees == 1:
        assert [len(c.requests) for c in refine_calls] == [1, 2, 2]
        return
    assert [len(c.requests) for c in refine_calls] == [7, 12, 10]
    assert not any(p.startswith("r1") for c in refine_calls[1:] for p in expanded(c))
    assert success_by_depth(out.trees) == {1: 1, 2: 1}
    assert [t.success_depth for t in out.trees] == [None, 1, None, 2, None, None, None]


def test_rejudges_and_retries_are_batched_across_trees():
    world = TreeWorld(rounds={"a.0": ["yynnx", "nnnnn"], "b.1": ["yynnx", "nnnnn"]}, unparseable={"a.2", "b.0"})
    out = run(world, [root("a"), root("b")], config=SearchConfig(max_depth=1))
    assert [(c.kind, c.attempt, c.n_requests, c.n) for c in out.calls] == [
        ("refine", 0, 2, 3),
        ("refine", 1, 2, 1),
        ("judge", 0, 6, 5),
        ("judge", 1, 2, 5),
    ]


def test_value_cache_by_response_text():
    # r.1 repeats the root, r.2 repeats its sibling r.0, and r.0.0 (depth 2) repeats its parent r.0.
    world = TreeWorld(alias={"r.1": "r", "r.2": "r.0", "r.0.0": "r.0"}, yes={"r.0": 1})
    out = run(world, [root(pattern="nnnny")], config=SearchConfig(max_depth=2))
    judged = [resp for c in world.calls if c.kind == "judge" for resp in ScriptedEngine.judged(c)]
    assert Counter(judged)["r.0"] == 1 and "r" not in judged
    (t,) = out.trees
    by_response = {}
    for n in t.nodes:
        by_response.setdefault(n.response, []).append(n)
    assert [n.judge_rounds for n in by_response["r.0"]] == [1, 0, 0]
    assert by_response["r"][1].value == 0.2 and by_response["r"][1].judge_rounds == 0  # root's mining judgement
    # judged: r.0 at depth 1; r.0.1, r.0.2 and the three children of the root copy ("r.3" to "r.5") at depth 2
    assert t.n_judgments == 5 * (1 + 5)
    assert len(t.nodes) == 1 + 3 + 6
    assert expanded([c for c in world.calls if c.kind == "refine"][1]) == ["r.0", "r"]


def test_unparseable_refinements_are_retried_and_bounded():
    world = TreeWorld(unparseable={"r.1", "r.3"})
    out = run(world, [root()], config=SearchConfig(max_depth=1))
    (t,) = out.trees
    assert [n.response for n in t.nodes[1:]] == ["r.0", "r.2", "r.4"]
    assert (t.n_refinements, t.n_unparseable) == (5, 2)
    assert [(c.kind, c.attempt, c.n) for c in out.calls] == [
        ("refine", 0, 3),
        ("refine", 1, 1),
        ("refine", 2, 1),
        ("judge", 0, 5),
    ]
    world = TreeWorld(unparseable={"r.1", "r.3", "r.4"})
    (t,) = run(world, [root()], config=SearchConfig(max_depth=1)).trees
    assert [n.response for n in t.nodes[1:]] == ["r.0", "r.2"] and t.n_unparseable == 3
    world = TreeWorld(unparseable={"r.0", "r.1", "r.2"})
    out = run(world, [root()], config=SearchConfig(max_refine_retries=0))
    assert [c.kind for c in out.calls] == ["refine"] and len(out.trees[0].nodes) == 1


@pytest.mark.parametrize("n_trees", [1, 7])
def test_dfs_worst_case_order_and_two_calls_per_expansion(n_trees):
    world = TreeWorld(yes={f"r{i}.2": 2 for i in range(n_trees)} | {f"r{i}.1": 1 for i in range(n_trees)})
    out = run(world, [root(f"r{i}") for i in range(n_trees)], config=DFS)
    refine_calls = [c for c in world.calls if c.kind == "refine"]
    assert [expanded(c)[0] for c in refine_calls] == ["r0", "r0.2", "r0.2.0", "r0.2.1", "r0.1", "r0.1.0", "r0.1.1"]
    assert all(len(c.requests) == n_trees for c in refine_calls)
    assert Counter(c.step for c in out.calls) == {s: 2 for s in range(1, 8)}
    for t in out.trees:
        assert not t.success and t.strategy == "dfs"
        assert (t.n_expansions, t.n_refinements, t.n_judgments) == (7, 21, 105)
        assert max(n.depth for n in t.nodes) == 3


def test_dfs_stops_when_a_child_passes_and_other_trees_continue():
    world = TreeWorld(yes={"a.0.1.2": 4, "b.0": 5})
    out = run(world, [root("a"), root("b")], config=DFS)
    a, b = out.trees
    assert b.success_depth == 1 and b.n_expansions == 1
    assert a.success_depth == 3 and a.n_expansions == 4
    assert [a.nodes[i].response for i in a.path()] == ["a", "a.0", "a.0.1", "a.0.1.2"]
    refine_calls = [c for c in world.calls if c.kind == "refine"]
    assert [expanded(c) for c in refine_calls] == [["a", "b"], ["a.0"], ["a.0.0"], ["a.0.1"]]


def test_records_round_trip_and_answers():
    world = TreeWorld(yes={"r.1": 2, "q.0.0": 4}, unparseable={"q.2"})
    out = run(world, [root("r"), root("q")])
    for t in out.trees:
        d = json.loads(json.dumps(t.to_dict()))
        assert TreeRecord.from_dict(d) == t
        assert d["path"] == list(t.path())
    r, q = out.trees
    assert not r.success and r.answer == "r.1" and r.path() == (0, 2)
    assert q.success and q.answer == "q.0.0" and q.nodes[q.success_index].output.startswith("reflection on q.0")
    with pytest.raises(ValueError, match="missing key 'nodes'"):
        TreeRecord.from_dict({k: v for k, v in r.to_dict().items() if k != "nodes"})


def test_bad_roots_and_config():
    with pytest.raises(ValueError, match="has no critique"):
        run(TreeWorld(), [root(pattern="yynnx")])
    with pytest.raises(ValueError, match="strategy must be one of"):
        SearchConfig(strategy="mcts")
    with pytest.raises(ValueError, match="SearchConfig.branch"):
        SearchConfig(branch=0)
    with pytest.raises(ValueError, match="threshold"):
        SearchConfig(threshold=1.0)
    assert run(TreeWorld(), []).calls == ()
