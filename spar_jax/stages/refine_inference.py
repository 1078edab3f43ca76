"""The ``refine_inference`` stage: inference-time tree search. Answer with the actor, judge with the refiner, refine
failures by tree search and return the first passing refinement (else the best node). Scored by the IFEval checker
before and after, under ``workdir/refine_inference``."""

from __future__ import annotations

import os

from spar_jax import files, ifeval
from spar_jax.config import RunConfig
from spar_jax.judge.generation import SamplingParams, derive_seed
from spar_jax.judge.templates import DEFAULT_TEMPLATES, Templates
from spar_jax.spar import sources
from spar_jax.spar.evaluation import answer, score
from spar_jax.spar.judges import Judge, ModelJudge, make_judge
from spar_jax.spar.mining import TreeRoot
from spar_jax.spar.tree_search import SearchConfig, search
from spar_jax.stages.common import refiner_path


def refine_answers(
    actor,
    refiner,
    prompts: list[dict],
    *,
    search_config: SearchConfig,
    judge_votes: int,
    judge_sampling: SamplingParams,
    max_new_tokens: int,
    seed: int,
    templates: Templates = DEFAULT_TEMPLATES,
    judge: Judge | None = None,
) -> tuple[list[str], list[str], dict]:
    """Returns (original answers, refined answers, stats). Engine calls: 1 actor + 1 judge + the search's.
    ``judge`` labels answers and tree nodes (default: the refiner)."""
    judge = judge or ModelJudge(refiner, templates)
    original = answer(actor, prompts, max_new_tokens=max_new_tokens, seed=seed)
    judgements = judge.judge(
        [(p["prompt"], r) for p, r in zip(prompts, original)],
        k=judge_votes,
        sampling=judge_sampling,
        seed=derive_seed(seed, "judge"),
    )
    roots = [
        TreeRoot(str(p["key"]), p["prompt"], r, j) for p, r, j in zip(prompts, original, judgements) if j.label == "no"
    ]
    outcome = search(
        refiner, roots, config=search_config, seed=derive_seed(seed, "search"), templates=templates, judge=judge
    )
    refined_by_key = {t.prompt_id: t.answer for t in outcome.trees}
    refined = [refined_by_key.get(str(p["key"]), r) for p, r in zip(prompts, original)]
    stats = {
        "prompts": len(prompts),
        "judged_no": len(roots),
        "judged_yes": sum(j.label == "yes" for j in judgements),
        "refined_passing": sum(t.success for t in outcome.trees),
        "engine_calls_search": len(outcome.calls),
    }
    return original, refined, stats


def refine_and_score(engines, prompts: list[dict], cfg, directory: str, *, seed: int) -> dict:
    """``engines`` = (actor, refiner). Writes before/ and after/ IFEval-checker reports and summary.json into
    ``directory``; the refiner uses ``cfg.spar.templates_file`` when set (the templates it was trained with);
    ``cfg.judge_kind`` picks who judges answers and nodes."""
    actor, refiner = engines
    templates = Templates.from_file(cfg.spar.templates_file) if cfg.spar.templates_file else DEFAULT_TEMPLATES
    original, refined, stats = refine_answers(
        actor,
        refiner,
        prompts,
        search_config=cfg.search,
        judge_votes=cfg.mining.k_votes,
        judge_sampling=cfg.mining.judge_sampling,
        max_new_tokens=cfg.eval.max_new_tokens,
        seed=seed,
        templates=templates,
        judge=make_judge(cfg.judge_kind, refiner, prompts, templates),
    )
    before = score(prompts, original, os.path.join(directory, "before"), "actor answers")
    after = score(prompts, refined, os.path.join(directory, "after"), "after inference-time tree search")
    out = {**stats, "before": before, "after": after}
    files.write_json(os.path.join(directory, "summary.json"), out)
    return out


def prompts(cfg: RunConfig) -> list[dict]:
    """IFEval's prompts when ``eval.ifeval_source`` is set (first ``eval.ifeval_limit``), else generated ones."""
    if not cfg.eval.ifeval_source:
        return sources.generated(cfg, cfg.prompts.num_heldout, seed=cfg.seed)
    out = [
        {
            "key": p.key,
            "prompt": p.prompt,
            "instruction_id_list": list(p.instruction_id_list),
            "kwargs": [dict(k) for k in p.kwargs],
        }
        for p in ifeval.load_ifeval_prompts(cfg.eval.ifeval_source)
    ]
    return out[: cfg.eval.ifeval_limit] if cfg.eval.ifeval_limit else out


def run(cfg: RunConfig, runtime) -> dict:
    engines = (runtime.engine("actor", cfg.actor.path), runtime.engine("refiner", refiner_path(cfg)))
    return refine_and_score(engines, prompts(cfg), cfg, os.path.join(cfg.workdir, "refine_inference"), seed=cfg.seed)
