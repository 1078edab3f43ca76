"""The SPaR stages, engine-agnostic: prompts and parsers, k-vote judging, negative mining, tree search, data."""

from spar_jax.spar.data import MixtureConfig, dpo_pairs, load_jsonl, refiner_mixture, save_jsonl
from spar_jax.spar.engine_protocol import Engine, SamplingParams, derive_seed
from spar_jax.spar.judging import Judgement, judge
from spar_jax.spar.mining import MiningConfig, PromptRecord, TreeRoot, mine, roots
from spar_jax.spar.prompts import (
    DEFAULT_TEMPLATES,
    Templates,
    actor_messages,
    judge_messages,
    parse_judgement,
    parse_refinement,
    refine_messages,
)
from spar_jax.spar.tree_search import SearchConfig, SearchOutcome, TreeRecord, search, success_by_depth

__all__ = [
    "DEFAULT_TEMPLATES", "Engine", "Judgement", "MiningConfig", "MixtureConfig", "PromptRecord", "SamplingParams",
    "SearchConfig", "SearchOutcome", "Templates", "TreeRecord", "TreeRoot", "actor_messages", "derive_seed",
    "dpo_pairs", "judge", "judge_messages", "load_jsonl", "mine", "parse_judgement", "parse_refinement",
    "refine_messages", "refiner_mixture", "roots", "save_jsonl", "search", "success_by_depth",
]
