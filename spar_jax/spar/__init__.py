"""The SPaR loop, engine-agnostic: negative mining, tree-search refinement, training data, and the loop's steps.

The judge protocol it shares with the evaluations (templates, k-vote judgments, the generation API) is
``spar_jax.judge``.
"""

from spar_jax.spar.data import MixtureConfig, dpo_pairs, load_jsonl, refiner_mixture, save_jsonl
from spar_jax.spar.mining import MiningConfig, PromptRecord, TreeRoot, mine, roots
from spar_jax.spar.tree_search import SearchConfig, SearchOutcome, TreeRecord, search, success_by_depth

__all__ = [
    "MiningConfig",
    "MixtureConfig",
    "PromptRecord",
    "SearchConfig",
    "SearchOutcome",
    "TreeRecord",
    "TreeRoot",
    "dpo_pairs",
    "load_jsonl",
    "mine",
    "refiner_mixture",
    "roots",
    "save_jsonl",
    "search",
    "success_by_depth",
]
