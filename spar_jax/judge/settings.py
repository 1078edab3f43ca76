"""The SPaR judge as the evaluations use it: the loop's judgment prompt and k-vote rules, with its own settings.

Judge calibration and LLMBar call :func:`run_judge`, which is ``spar_jax.judge.votes.judge`` (same template,
same ``parse_judgement``, same majority with ties dropped) plus validated settings and a seed per evaluation.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from spar_jax.judge import generation as gen
from spar_jax.judge.templates import DEFAULT_TEMPLATES, Templates
from spar_jax.judge.votes import Judgement, judge


@dataclasses.dataclass(frozen=True)
class JudgeConfig:
    """How the judge is sampled; defaults are the SPaR loop's (5 votes, temperature 0.7, top-p 1.0).

    ``templates_file``: a JSON file overriding the judge template (as ``spar.templates_file``); "" = ours.
    ``k``: votes per item (majority decides). ``temperature``: judge sampling temperature. ``top_p``: judge nucleus
    sampling top-p. ``max_new_tokens``: judge token budget per vote. ``seed``: the sampling seed.
    """

    k: int = 5
    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 1024
    templates_file: str = ""
    seed: int = 0

    def __post_init__(self):
        if not isinstance(self.k, int) or isinstance(self.k, bool) or self.k < 1:
            raise ValueError(f"JudgeConfig.k must be a positive int, got {self.k!r}")
        self.sampling()  # validates temperature, top_p and max_new_tokens

    def sampling(self) -> gen.SamplingParams:
        return gen.SamplingParams(max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p)

    def templates(self) -> Templates:
        return Templates.from_file(self.templates_file) if self.templates_file else DEFAULT_TEMPLATES


def run_judge(
    engine: gen.Generator,
    items: Sequence[tuple[str, str]],
    cfg: JudgeConfig,
    tag: str,
    templates: Templates | None = None,
) -> list[Judgement]:
    """k-vote judgments of (instruction, response) items in one engine call; the seed depends on cfg.seed and tag."""
    return judge(
        engine,
        items,
        k=cfg.k,
        sampling=cfg.sampling(),
        seed=gen.derive_seed(cfg.seed, tag),
        templates=templates or cfg.templates(),
    )


def vote_counts(judgements: Sequence[Judgement]) -> dict[str, int]:
    """Totals over judgments: votes, invalid votes, and majority labels (yes / no / tie)."""
    votes = sum(len(j.votes) for j in judgements)
    return {
        "judgements": len(judgements),
        "votes": votes,
        "invalid_votes": votes - sum(j.n_valid for j in judgements),
        "majority_yes": sum(j.label == "yes" for j in judgements),
        "majority_no": sum(j.label == "no" for j in judgements),
        "ties": sum(j.is_tie for j in judgements),
    }
