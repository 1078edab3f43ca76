"""Stage 2, tree-search refinement: level-synchronous BFS or DFS over all trees at once.

Each step expands the nodes of every live tree together: ONE refinement call (n = branch) for all of them and ONE
judging call (n = k votes) for all new children. Extra calls happen only for unparseable refinements (n = 1 per
missing child, at most `max_refine_retries` rounds) and for tied judgements (at most `max_rejudges` rounds), and
those are batched across trees too. BFS steps are depth levels; DFS steps are one expansion per live tree.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any, Sequence

from spar_jax.judge import generation as gen
from spar_jax.judge.templates import DEFAULT_TEMPLATES, Templates, parse_refinement, refine_messages
from spar_jax.judge.votes import Judgement
from spar_jax.spar.judges import Judge, ModelJudge
from spar_jax.spar.mining import TreeRoot

STRATEGIES = ("bfs", "dfs")


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Budgets of the search. A child passes when its value V > threshold."""

    strategy: str = "bfs"
    branch: int = 3  # children per expanded node
    keep: int = 2  # children kept for the next level (BFS) / recursed into (DFS)
    max_depth: int = 3
    threshold: float = 0.5
    k_votes: int = 5
    max_rejudges: int = 3  # re-judging rounds for a tied child before it is dropped
    max_refine_retries: int = 2  # extra rounds for unparseable refinements
    refine_sampling: gen.SamplingParams = gen.SamplingParams(max_new_tokens=2048, temperature=0.7, top_p=1.0)
    judge_sampling: gen.SamplingParams = gen.SamplingParams(max_new_tokens=1024, temperature=0.7, top_p=1.0)

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"SearchConfig.strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        for name in ("branch", "keep", "max_depth", "k_votes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"SearchConfig.{name} must be a positive int, got {value!r}")
        for name in ("max_rejudges", "max_refine_retries"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"SearchConfig.{name} must be an int >= 0, got {value!r}")
        if not 0 <= self.threshold < 1:
            raise ValueError(f"SearchConfig.threshold must be in [0, 1), got {self.threshold!r}")


@dataclasses.dataclass(frozen=True)
class Node:
    """A tree node. status: "root"; "ok" (judged, has a value); "tie" (still tied after re-judging: dropped)."""

    index: int
    parent: int | None
    depth: int
    response: str
    output: str | None  # the full refiner output that produced this node; None for the root
    judgement: Judgement
    status: str
    judge_rounds: int  # judging rounds spent on this node; 0 for the root and for cache hits

    @property
    def value(self) -> float | None:
        return self.judgement.value

    @property
    def critique(self) -> str | None:
        return self.judgement.critique

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["judgement"] = self.judgement.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Node":
        return cls(**{**d, "judgement": Judgement.from_dict(d["judgement"])})


@dataclasses.dataclass(frozen=True)
class TreeRecord:
    """One finished tree: all nodes (nodes[0] is the root), the passing node if any, and what the search cost."""

    prompt_id: str
    instruction: str
    strategy: str
    nodes: tuple[Node, ...]
    success_index: int | None
    n_expansions: int
    n_refinements: int  # refinement completions requested, retries included
    n_unparseable: int  # of which could not be parsed
    n_judgments: int  # judgment votes requested, re-judges included

    @property
    def root(self) -> Node:
        return self.nodes[0]

    @property
    def success(self) -> bool:
        return self.success_index is not None

    @property
    def success_depth(self) -> int | None:
        return None if self.success_index is None else self.nodes[self.success_index].depth

    @property
    def best_index(self) -> int | None:
        """The passing node, else the judged child with the highest value (earliest on ties), else None."""
        if self.success_index is not None:
            return self.success_index
        ranked = _rank(self.nodes, [n.index for n in self.nodes if n.status == "ok"])
        return ranked[0] if ranked else None

    def path(self, index: int | None = None) -> tuple[int, ...]:
        """Node indices from the root to `index` (default: `best_index`; just the root if there is none)."""
        index = self.best_index if index is None else index
        out = []
        while index is not None:
            out.append(index)
            index = self.nodes[index].parent
        return tuple(reversed(out)) or (0,)

    @property
    def answer(self) -> str:
        """Inference-time answer: the passing refinement, else the best node, else the root response."""
        best = self.best_index
        return self.nodes[0 if best is None else best].response

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["nodes"] = [n.to_dict() for n in self.nodes]
        d["success_depth"] = self.success_depth
        d["path"] = list(self.path())
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TreeRecord":
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            fields = {name: d[name] for name in names}
        except KeyError as e:
            raise ValueError(f"tree record is missing key {e.args[0]!r}") from None
        fields["nodes"] = tuple(Node.from_dict(n) for n in d["nodes"])
        return cls(**fields)


@dataclasses.dataclass(frozen=True)
class EngineCall:
    """One refiner call made by the search: kind "refine" | "judge", step (BFS depth / DFS expansion round),
    attempt (0 = the step's main call, > 0 = retry or re-judge round), number of requests, n per request."""

    kind: str
    step: int
    attempt: int
    n_requests: int
    n: int


@dataclasses.dataclass(frozen=True)
class SearchOutcome:
    trees: tuple[TreeRecord, ...]
    calls: tuple[EngineCall, ...]


@dataclasses.dataclass
class _Tree:
    """Mutable search state of one tree (internal to `search`)."""

    idx: int
    root: TreeRoot
    nodes: list[Node]
    cache: dict[str, Judgement]  # value cache keyed by response text
    todo: list[int]  # BFS: this level's frontier; DFS: the stack (last = next to expand)
    success: int | None = None
    done: bool = False
    n_expansions: int = 0
    n_refinements: int = 0
    n_unparseable: int = 0
    n_judgments: int = 0


def _rank(nodes: Sequence[Node], candidates: Sequence[int]) -> list[int]:
    """Judged ("ok") candidates by value, highest first; ties keep candidate order."""
    ok = [i for i in candidates if nodes[i].status == "ok"]
    return sorted(ok, key=lambda i: -nodes[i].value)


def _refine(refiner, jobs, cfg: SearchConfig, templates: Templates, seed: int, step: int, calls: list):
    """Up to `branch` parsed refinements (refined response, raw output) per job, retrying unparseable ones."""
    requests = [
        refine_messages(t.root.instruction, t.nodes[p].response, t.nodes[p].critique, templates) for t, p in jobs
    ]
    candidates: list[list[tuple[str, str]]] = [[] for _ in jobs]
    missing = [cfg.branch] * len(jobs)
    for attempt in range(cfg.max_refine_retries + 1):
        slots = list(range(len(jobs))) if attempt == 0 else [j for j, m in enumerate(missing) for _ in range(m)]
        if not slots:
            break
        n = cfg.branch if attempt == 0 else 1
        outs = gen.generate(
            refiner,
            [requests[j] for j in slots],
            n=n,
            sampling=cfg.refine_sampling,
            seed=gen.derive_seed(seed, "refine", step, attempt),
        )
        calls.append(EngineCall("refine", step, attempt, len(slots), n))
        for j, completions in zip(slots, outs):
            tree = jobs[j][0]
            for c in completions:
                tree.n_refinements += 1
                refined = parse_refinement(c.text)
                if refined is None:
                    tree.n_unparseable += 1
                else:
                    candidates[j].append((refined, c.text))
                    missing[j] -= 1
    return candidates


def _judge_new(judge: Judge, jobs, candidates, cfg: SearchConfig, seed: int, step: int, calls: list):
    """Judges each candidate text not in its tree's cache once, re-judging ties; fills the caches.

    Returns {(tree idx, response): (judgement, judging rounds)} for the texts judged in this step.
    """
    pending: dict[tuple[int, str], _Tree] = {}
    for (t, _), cands in zip(jobs, candidates):
        for response, _ in cands:
            if response not in t.cache:
                pending.setdefault((t.idx, response), t)
    fresh: dict[tuple[int, str], tuple[Judgement, int]] = {}
    todo = list(pending)
    for attempt in range(cfg.max_rejudges + 1):
        if not todo:
            break
        judgements = judge.judge(
            [(pending[key].root.instruction, key[1]) for key in todo],
            k=cfg.k_votes,
            sampling=cfg.judge_sampling,
            seed=gen.derive_seed(seed, "judge", step, attempt),
        )
        if judge.kind != "rules":
            calls.append(EngineCall("judge", step, attempt, len(todo), cfg.k_votes))
        for key, j in zip(todo, judgements):
            pending[key].n_judgments += len(j.votes)
            fresh[key] = (j, attempt + 1)
        todo = [key for key in todo if fresh[key][0].is_tie]
    for key, (j, _) in fresh.items():
        pending[key].cache[key[1]] = j
    return fresh


def _expand(refiner, judge: Judge, jobs, cfg: SearchConfig, templates: Templates, seed: int, step: int, calls: list):
    """Expands every (tree, node index) in `jobs` into up to `branch` judged children; returns their indices."""
    candidates = _refine(refiner, jobs, cfg, templates, seed, step, calls)
    fresh = _judge_new(judge, jobs, candidates, cfg, seed, step, calls)
    children = []
    for (t, p), cands in zip(jobs, candidates):
        kids = []
        for response, output in cands:
            j = t.cache[response]
            rounds = fresh.pop((t.idx, response))[1] if (t.idx, response) in fresh else 0
            node = Node(len(t.nodes), p, t.nodes[p].depth + 1, response, output, j, "tie" if j.is_tie else "ok", rounds)
            t.nodes.append(node)
            kids.append(node.index)
        t.n_expansions += 1
        children.append(kids)
    return children


def _passes(t: _Tree, ranked: list[int], cfg: SearchConfig) -> bool:
    if ranked and t.nodes[ranked[0]].value > cfg.threshold:
        t.success, t.done = ranked[0], True
    return t.done


def _bfs(refiner, judge, trees: list[_Tree], cfg: SearchConfig, templates: Templates, seed: int, calls: list) -> None:
    for depth in range(1, cfg.max_depth + 1):
        live = [t for t in trees if not t.done]
        jobs = [(t, p) for t in live for p in t.todo]
        if not jobs:
            return
        kids = _expand(refiner, judge, jobs, cfg, templates, seed, depth, calls)
        level: dict[int, list[int]] = {t.idx: [] for t in live}
        for (t, _), ks in zip(jobs, kids):
            level[t.idx].extend(ks)
        for t in live:
            ranked = _rank(t.nodes, level[t.idx])
            if not _passes(t, ranked, cfg):
                t.todo = ranked[: cfg.keep]
                t.done = not t.todo or depth == cfg.max_depth


def _dfs(refiner, judge, trees: list[_Tree], cfg: SearchConfig, templates: Templates, seed: int, calls: list) -> None:
    step = 0
    while live := [t for t in trees if not t.done]:
        step += 1
        jobs = [(t, t.todo.pop()) for t in live]
        kids = _expand(refiner, judge, jobs, cfg, templates, seed, step, calls)
        for (t, p), ks in zip(jobs, kids):
            ranked = _rank(t.nodes, ks)
            if _passes(t, ranked, cfg):
                continue
            if t.nodes[p].depth + 1 < cfg.max_depth:
                t.todo.extend(reversed(ranked[: cfg.keep]))  # best child on top of the stack
            t.done = not t.todo


def search(
    refiner: gen.Generator,
    roots: Sequence[TreeRoot],
    *,
    config: SearchConfig = SearchConfig(),
    seed: int = 0,
    templates: Templates = DEFAULT_TEMPLATES,
    judge: Judge | None = None,
) -> SearchOutcome:
    """Refines every root with the configured tree search; returns per-tree records and the engine calls made.
    `judge` labels the children (default: the refiner, `judges.ModelJudge`).

    A root's value counts as 0 for the search; its mining judgement seeds the tree's value cache, so a child that
    reproduces the root verbatim is not judged again.
    """
    for r in roots:
        if r.critique is None:
            raise ValueError(f"tree root {r.prompt_id!r} has no critique: its judgement has no majority")
    trees = []
    for i, r in enumerate(roots):
        root = Node(0, None, 0, r.response, None, r.judgement, "root", 0)
        trees.append(_Tree(i, r, [root], {r.response: r.judgement}, [0]))
    calls: list[EngineCall] = []
    judge = judge or ModelJudge(refiner, templates)
    (_bfs if config.strategy == "bfs" else _dfs)(refiner, judge, trees, config, templates, seed, calls)
    records = tuple(
        TreeRecord(
            t.root.prompt_id,
            t.root.instruction,
            config.strategy,
            tuple(t.nodes),
            t.success,
            t.n_expansions,
            t.n_refinements,
            t.n_unparseable,
            t.n_judgments,
        )
        for t in trees
    )
    return SearchOutcome(records, tuple(calls))


def success_by_depth(trees: Sequence[TreeRecord]) -> dict[int, int]:
    """Number of successful trees per depth of success (depths with no success are omitted)."""
    return dict(sorted(Counter(t.success_depth for t in trees if t.success).items()))
