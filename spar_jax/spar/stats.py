"""Pure statistics of the SPaR stages, for DONE records and the run report."""

from __future__ import annotations

import difflib
from collections import Counter
from typing import Any, Sequence

from spar_jax.spar.mining import PromptRecord
from spar_jax.spar.tree_search import TreeRecord


def mining_stats(records: Sequence[PromptRecord]) -> dict[str, Any]:
    """Counts of prompts, responses, votes (valid/invalid), labels, negatives (tree roots) and judge agreement.

    Judge agreement = fraction of valid votes that agree with their response's majority label (responses with a
    majority only); 1.0 means the k votes never disagree.
    """
    labels = Counter()
    votes = valid = agree = counted = 0
    for r in records:
        for s in r.samples:
            j = s.judgement
            labels[j.label or "tie"] += 1
            votes += len(j.votes)
            valid += j.n_valid
            if j.label is not None:
                agree += j.votes.count(j.label)
                counted += j.n_valid
    responses = sum(len(r.samples) for r in records)
    return {
        "prompts": len(records),
        "responses": responses,
        "votes": votes,
        "invalid_votes": votes - valid,
        "labels": {k: labels.get(k, 0) for k in ("yes", "no", "tie")},
        "prompts_with_negative": sum(r.root_index is not None for r in records),
        "judge_agreement": agree / counted if counted else None,
    }


def search_stats(trees: Sequence[TreeRecord], calls_per_shard: Sequence[Sequence[dict]]) -> dict[str, Any]:
    """Trees, successes, success rate by depth, refinement/judgment counts and engine calls (per shard and level)."""
    by_depth = Counter(t.success_depth for t in trees if t.success)
    n = len(trees)
    calls = [c for shard in calls_per_shard for c in shard]
    return {
        "trees": n,
        "successes": sum(t.success for t in trees),
        "success_rate": sum(t.success for t in trees) / n if n else None,
        "success_by_depth": {str(d): by_depth[d] / n for d in sorted(by_depth)} if n else {},
        "refinements": sum(t.n_refinements for t in trees),
        "unparseable_refinements": sum(t.n_unparseable for t in trees),
        "judgments": sum(t.n_judgments for t in trees),
        "engine_calls": len(calls),
        "engine_calls_by_kind": dict(Counter(c["kind"] for c in calls)),
        "engine_calls_main_per_level": _main_calls_per_level(calls_per_shard),
    }


def _main_calls_per_level(calls_per_shard: Sequence[Sequence[dict]]) -> float | None:
    """Mean number of first-attempt calls per (shard, step): 2 when every level is one refine + one judge call."""
    levels = Counter()
    for s, shard in enumerate(calls_per_shard):
        for c in shard:
            if c["attempt"] == 0:
                levels[(s, c["step"])] += 1
    return sum(levels.values()) / len(levels) if levels else None


def edit_similarity(a: str, b: str) -> float:
    """difflib's ratio in [0, 1]: 1 = identical texts."""
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def mean_edit_similarity(pairs: Sequence[dict]) -> float | None:
    """Mean similarity of chosen vs rejected responses over DPO pairs (SPaR's pairs should be close)."""
    if not pairs:
        return None
    sims = [edit_similarity(p["chosen"][-1]["content"], p["rejected"][-1]["content"]) for p in pairs]
    return sum(sims) / len(sims)
