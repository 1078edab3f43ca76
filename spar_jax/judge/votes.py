"""k-vote judgments: parse each vote, take the majority (ties dropped), keep the critique, compute the value V."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, Sequence

from spar_jax.judge import generation as gen
from spar_jax.judge.templates import DEFAULT_TEMPLATES, Templates, judge_messages, parse_judgement

Label = Literal["yes", "no"]
_VALID_VOTES = ("yes", "no", None)


@dataclasses.dataclass(frozen=True)
class Judgement:
    """The k judgment texts for one (instruction, response) and their parsed votes ("yes" | "no" | None)."""

    texts: tuple[str, ...]
    votes: tuple[Label | None, ...]

    def __post_init__(self):
        object.__setattr__(self, "texts", tuple(self.texts))
        object.__setattr__(self, "votes", tuple(self.votes))
        if len(self.texts) != len(self.votes):
            raise ValueError(f"Judgement: {len(self.texts)} texts but {len(self.votes)} votes")
        bad = [v for v in self.votes if v not in _VALID_VOTES]
        if bad:
            raise ValueError(f"Judgement: votes must be 'yes', 'no' or None, got {bad[0]!r}")

    @classmethod
    def from_texts(cls, texts: Sequence[str]) -> "Judgement":
        return cls(tuple(texts), tuple(parse_judgement(t) for t in texts))

    @property
    def n_yes(self) -> int:
        return self.votes.count("yes")

    @property
    def n_no(self) -> int:
        return self.votes.count("no")

    @property
    def n_valid(self) -> int:
        return self.n_yes + self.n_no

    @property
    def label(self) -> Label | None:
        """Majority of the valid votes; None on a tie (including no valid vote at all)."""
        if self.n_yes > self.n_no:
            return "yes"
        if self.n_no > self.n_yes:
            return "no"
        return None

    @property
    def is_tie(self) -> bool:
        return self.label is None

    @property
    def mixed(self) -> bool:
        """Both a Yes and a No among the valid votes."""
        return self.n_yes > 0 and self.n_no > 0

    @property
    def value(self) -> float | None:
        """V = #Yes / (#Yes + #No) over valid votes; None when no vote is valid."""
        return self.n_yes / self.n_valid if self.n_valid else None

    @property
    def critique(self) -> str | None:
        """The first judgment text whose vote agrees with the majority; None on a tie."""
        label = self.label
        if label is None:
            return None
        return self.texts[self.votes.index(label)]

    def to_dict(self) -> dict[str, Any]:
        return {"texts": list(self.texts), "votes": list(self.votes), "label": self.label, "value": self.value}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Judgement":
        try:
            return cls(tuple(d["texts"]), tuple(d["votes"]))
        except KeyError as e:
            raise ValueError(f"Judgement record is missing key {e.args[0]!r}") from None


def judge(
    engine: gen.Generator,
    items: Sequence[tuple[str, str]],
    *,
    k: int,
    sampling: gen.SamplingParams,
    seed: int,
    templates: Templates = DEFAULT_TEMPLATES,
) -> list[Judgement]:
    """Judges every (instruction, response) item `k` times in ONE engine call (n=k); results in item order.

    No call is made for an empty item list.
    """
    requests = [judge_messages(instruction, response, templates) for instruction, response in items]
    outputs = gen.generate(engine, requests, n=k, sampling=sampling, seed=seed)
    return [Judgement.from_texts([c.text for c in completions]) for completions in outputs]
