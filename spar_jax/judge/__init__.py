"""The judge protocol the SPaR loop and the evaluations share: prompt templates and their parsers, k-vote judgments,
and the generation API they call an engine through."""

from spar_jax.judge.generation import Generator, SamplingParams, derive_seed, generate
from spar_jax.judge.settings import JudgeConfig, run_judge, vote_counts
from spar_jax.judge.templates import (
    DEFAULT_TEMPLATES,
    Templates,
    actor_messages,
    judge_messages,
    parse_judgement,
    parse_refinement,
    refine_messages,
)
from spar_jax.judge.votes import Judgement, judge

__all__ = [
    "DEFAULT_TEMPLATES",
    "Generator",
    "JudgeConfig",
    "Judgement",
    "SamplingParams",
    "Templates",
    "actor_messages",
    "derive_seed",
    "generate",
    "judge",
    "judge_messages",
    "parse_judgement",
    "parse_refinement",
    "refine_messages",
    "run_judge",
    "vote_counts",
]
