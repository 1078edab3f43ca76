"""Pure statistics of the SPaR steps, for DONE records and the run report."""

from __future__ import annotations

import difflib
from collections import Counter
from typing import Any, Sequence

from spar_jax.spar.mining import PromptRecord
from spar_jax.spar.tree_search import TreeRecord


def judge_vs_checker(labels: Sequence[str | None], verdicts: Sequence[bool | None]) -> dict[str, Any]:
    """The judge's self-evaluation bias against the IFEval checker on the same answers.

    ``labels``: majority labels ("yes" | "no" | None = tie); ``verdicts``: the checker's strict pass (None = the
    prompt has no checkable constraints; such answers are left out). Returns the judge's Yes rate over labelled
    answers, the checker's pass rate over the same answers, their agreement, and the confusion counts.
    """
    pairs = [(lab, v) for lab, v in zip(labels, verdicts) if lab is not None and v is not None]
    n = len(pairs)
    counts = Counter((lab, v) for lab, v in pairs)
    return {
        "checked": n,
        "judge_yes_rate": sum(lab == "yes" for lab, _ in pairs) / n if n else None,
        "checker_pass_rate": sum(v for _, v in pairs) / n if n else None,
        "checker_agreement": sum((lab == "yes") == v for lab, v in pairs) / n if n else None,
        "yes_pass": counts[("yes", True)],
        "yes_fail": counts[("yes", False)],
        "no_pass": counts[("no", True)],
        "no_fail": counts[("no", False)],
    }


def mining_stats(
    records: Sequence[PromptRecord], verdicts: Sequence[Sequence[bool | None]] | None = None
) -> dict[str, Any]:
    """Counts of prompts, responses, votes (valid/invalid), labels, negatives (tree roots) and judge agreement.

    Judge agreement = fraction of valid votes that agree with their response's majority label (responses with a
    majority only); 1.0 means the k votes never disagree. ``truncated``: samples cut by the length limit;
    ``truncated_negatives``: of those, judged No (never tree roots); ``roots_lost_to_truncation``: prompts whose
    every No sample was cut. ``verdicts`` (the checker's, per record and sample) add ``checker`` (`judge_vs_checker`).
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
    cut_no = [[s.finish_reason == "length" for s in r.samples if s.judgement.label == "no"] for r in records]
    out = {
        "prompts": len(records),
        "responses": responses,
        "votes": votes,
        "invalid_votes": votes - valid,
        "labels": {k: labels.get(k, 0) for k in ("yes", "no", "tie")},
        "prompts_with_negative": sum(r.root_index is not None for r in records),
        "judge_agreement": agree / counted if counted else None,
        "truncated": sum(s.finish_reason == "length" for r in records for s in r.samples),
        "truncated_negatives": sum(sum(c) for c in cut_no),
        "roots_lost_to_truncation": sum(bool(c) and all(c) for c in cut_no),
    }
    if verdicts is not None:
        out["checker"] = judge_vs_checker(
            [s.judgement.label for r in records for s in r.samples], [v for vs in verdicts for v in vs]
        )
    return out


def tree_checker_stats(trees: Sequence[TreeRecord], verdict) -> dict[str, Any]:
    """How the search's labels compare with the checker: ``verdict(instruction, response) -> bool | None``.

    ``roots_failing``: share of roots the checker fails too; ``passing_nodes_pass``: share of passing refinements
    (the DPO "chosen") the checker passes; ``nodes``: `judge_vs_checker` over every judged child.
    """
    roots = [verdict(t.instruction, t.root.response) for t in trees]
    chosen = [verdict(t.instruction, t.nodes[t.success_index].response) for t in trees if t.success]
    labels, verdicts = [], []
    for t in trees:
        for n in t.nodes[1:]:
            labels.append(n.judgement.label)
            verdicts.append(verdict(t.instruction, n.response))
    known_roots, known_chosen = [v for v in roots if v is not None], [v for v in chosen if v is not None]
    return {
        "roots_failing": sum(not v for v in known_roots) / len(known_roots) if known_roots else None,
        "passing_nodes_pass": sum(known_chosen) / len(known_chosen) if known_chosen else None,
        "nodes": judge_vs_checker(labels, verdicts),
    }


def pair_checker_stats(pairs: Sequence[dict], verdict) -> dict[str, Any]:
    """Share of DPO pairs whose chosen passes the checker, whose rejected fails it, and both (a "right" pair)."""
    known = []
    for p in pairs:
        instruction = p["prompt"][-1]["content"]
        c, r = verdict(instruction, p["chosen"][-1]["content"]), verdict(instruction, p["rejected"][-1]["content"])
        if c is not None and r is not None:
            known.append((c, r))
    n = len(known)
    return {
        "checked": n,
        "chosen_pass": sum(c for c, _ in known) / n if n else None,
        "rejected_fail": sum(not r for _, r in known) / n if n else None,
        "right_pairs": sum(c and not r for c, r in known) / n if n else None,
    }


def search_stats(trees: Sequence[TreeRecord], calls_per_shard: Sequence[Sequence[dict]]) -> dict[str, Any]:
    """Trees, successes, success rate by depth, refinement/judgment counts and engine calls (per shard and level);
    ``success_rate_at_depth``: successes at a depth over the trees still searching when it began."""
    by_depth = Counter(t.success_depth for t in trees if t.success)
    n = len(trees)
    calls = [c for shard in calls_per_shard for c in shard]
    return {
        "trees": n,
        "successes": sum(t.success for t in trees),
        "success_rate": sum(t.success for t in trees) / n if n else None,
        "success_by_depth": {str(d): by_depth[d] / n for d in sorted(by_depth)} if n else {},
        "success_rate_at_depth": _conditional_success(trees),
        "refinements": sum(t.n_refinements for t in trees),
        "unparseable_refinements": sum(t.n_unparseable for t in trees),
        "judgments": sum(t.n_judgments for t in trees),
        "engine_calls": len(calls),
        "engine_calls_by_kind": dict(Counter(c["kind"] for c in calls)),
        "engine_calls_main_per_level": _main_calls_per_level(calls_per_shard),
    }


def _conditional_success(trees: Sequence[TreeRecord]) -> dict[str, float]:
    depths = sorted({n.depth for t in trees for n in t.nodes[1:]})
    out = {}
    for d in depths:
        searching = [t for t in trees if any(n.depth == d for n in t.nodes[1:])]
        if searching:
            out[str(d)] = sum(t.success_depth == d for t in searching) / len(searching)
    return out


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


def sampling_use(before: dict[int, dict[str, int]], after: dict[int, dict[str, int]]) -> dict[str, Any] | None:
    """The engines' work between two ``Runtime.engine_counters`` snapshots: each counter summed over engines (an
    engine loaded in between counts from zero), and ``utilization`` = generated_tokens / decode_slot_steps, the share
    of decode slot-steps that produced a token (1.0 when no decode row ever idles). None when nothing was decoded."""
    total: dict[str, int] = {}
    for engine, counters in after.items():
        start = before.get(engine, {})
        for k, v in counters.items():
            total[k] = total.get(k, 0) + v - start.get(k, 0)
    if not total.get("decode_slot_steps"):
        return None
    return {**total, "utilization": round(total["generated_tokens"] / total["decode_slot_steps"], 4)}
