"""Stage 1, negative mining: sample the actor, judge every response, pick one failing response per prompt as a root.

Two engine calls for any number of prompts: one actor call (n = samples per prompt) and one refiner call
(n = votes per response).
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any, Sequence

from spar_jax.judge import generation as gen
from spar_jax.judge.templates import DEFAULT_TEMPLATES, Templates, actor_messages
from spar_jax.judge.votes import Judgement
from spar_jax.spar.judges import Judge, ModelJudge


@dataclasses.dataclass(frozen=True)
class MiningConfig:
    n_samples: int = 5
    k_votes: int = 5
    actor_sampling: gen.SamplingParams = gen.SamplingParams(max_new_tokens=1024, temperature=0.9, top_p=0.9)
    judge_sampling: gen.SamplingParams = gen.SamplingParams(max_new_tokens=1024, temperature=0.7, top_p=1.0)
    truncated_roots: bool = False  # True: samples cut by the length limit may be roots (tiny test models only)

    def __post_init__(self):
        for name in ("n_samples", "k_votes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"MiningConfig.{name} must be a positive int, got {value!r}")


@dataclasses.dataclass(frozen=True)
class TreeRoot:
    """A failing response to refine: the root of one refinement tree. Its critique is `judgement.critique`."""

    prompt_id: str
    instruction: str
    response: str
    judgement: Judgement

    @property
    def critique(self) -> str | None:
        return self.judgement.critique

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt_id": self.prompt_id,
            "instruction": self.instruction,
            "response": self.response,
            "judgement": self.judgement.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TreeRoot":
        try:
            return cls(d["prompt_id"], d["instruction"], d["response"], Judgement.from_dict(d["judgement"]))
        except KeyError as e:
            raise ValueError(f"tree root record is missing key {e.args[0]!r}") from None


@dataclasses.dataclass(frozen=True)
class Sample:
    """One actor response with its k-vote judgement."""

    response: str
    finish_reason: str
    judgement: Judgement

    def to_dict(self) -> dict[str, Any]:
        return {"response": self.response, "finish_reason": self.finish_reason, "judgement": self.judgement.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Sample":
        return cls(d["response"], d["finish_reason"], Judgement.from_dict(d["judgement"]))


@dataclasses.dataclass(frozen=True)
class PromptRecord:
    """Everything mining learned about one prompt: all samples, their votes and labels, and the chosen root."""

    prompt_id: str
    instruction: str
    samples: tuple[Sample, ...]
    root_index: int | None  # index into samples of the tree root, None if no sample has a majority No

    @property
    def root(self) -> TreeRoot | None:
        if self.root_index is None:
            return None
        s = self.samples[self.root_index]
        return TreeRoot(self.prompt_id, self.instruction, s.response, s.judgement)

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt_id": self.prompt_id,
            "instruction": self.instruction,
            "samples": [s.to_dict() for s in self.samples],
            "root_index": self.root_index,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PromptRecord":
        try:
            samples = tuple(Sample.from_dict(s) for s in d["samples"])
            return cls(d["prompt_id"], d["instruction"], samples, d["root_index"])
        except KeyError as e:
            raise ValueError(f"mining record is missing key {e.args[0]!r}") from None


def choose_root(
    labels: Sequence[str | None], *, seed: int, prompt_id: str, finish_reasons: Sequence[str] | None = None
) -> int | None:
    """Index of one majority-"no" label drawn uniformly, or None if there is none.

    A sample cut by the length limit (``finish_reason == "length"``) is never a root: its fix would be to finish,
    not to follow a constraint. The draw depends only on (seed, prompt_id), not on the batch the prompt was mined in.
    """
    cut = [r == "length" for r in finish_reasons] if finish_reasons is not None else [False] * len(labels)
    failing = [i for i, label in enumerate(labels) if label == "no" and not cut[i]]
    if not failing:
        return None
    return random.Random(gen.derive_seed(seed, "root", prompt_id)).choice(failing)


def mine(
    actor: gen.Generator,
    refiner: gen.Generator,
    instructions: Sequence[str],
    *,
    ids: Sequence[str] | None = None,
    config: MiningConfig = MiningConfig(),
    seed: int = 0,
    templates: Templates = DEFAULT_TEMPLATES,
    judge: Judge | None = None,
) -> list[PromptRecord]:
    """Samples `n_samples` responses per instruction (one actor call), judges all of them `k_votes` times (one
    refiner call), and records a random majority-No response per prompt, not cut by the length limit, as its root.

    `ids` name the prompts (default: their index as a string) and must be unique; they seed the root draw.
    `judge` labels the samples (default: the refiner, `judges.ModelJudge`).
    """
    ids = [str(i) for i in range(len(instructions))] if ids is None else [str(i) for i in ids]
    if len(ids) != len(instructions):
        raise ValueError(f"mine: {len(ids)} ids for {len(instructions)} instructions")
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"mine: prompt ids must be unique, {dup!r} repeats")
    n = config.n_samples
    sampled = gen.generate(
        actor,
        [actor_messages(x) for x in instructions],
        n=n,
        sampling=config.actor_sampling,
        seed=gen.derive_seed(seed, "actor"),
    )
    items = [(instr, c.text) for instr, completions in zip(instructions, sampled) for c in completions]
    judge = judge or ModelJudge(refiner, templates)
    judgements = judge.judge(
        items, k=config.k_votes, sampling=config.judge_sampling, seed=gen.derive_seed(seed, "judge")
    )
    records = []
    for p, (pid, instr, completions) in enumerate(zip(ids, instructions, sampled)):
        samples = tuple(
            Sample(c.text, c.finish_reason, j) for c, j in zip(completions, judgements[p * n : (p + 1) * n])
        )
        root = choose_root(
            [s.judgement.label for s in samples],
            seed=seed,
            prompt_id=pid,
            finish_reasons=None if config.truncated_roots else [s.finish_reason for s in samples],
        )
        records.append(PromptRecord(pid, instr, samples, root))
    return records


def roots(records: Sequence[PromptRecord]) -> list[TreeRoot]:
    """The tree roots of the records that have one, in record order."""
    return [r.root for r in records if r.root is not None]
