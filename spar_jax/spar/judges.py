"""Who labels answers and tree nodes: the refiner (``model``), the IFEval rule checker (``rules``), or both
(``hybrid``: the checker where every constraint of the prompt is checkable, the refiner elsewhere).

Every judge returns `Judgement`s, so mining, tree search and the data rules read them the same way. The rule
checker's judgement has one vote and, as its critique, a step-by-step verification in the refiner's own protocol
(`bootstrap.critique_text`), so the refiner can refine from it; its value V is 1 or 0.

``rules`` is an upper bound that isolates the judge's quality (the refiner still refines); it needs prompts that
carry IFEval's ``instruction_id_list`` / ``kwargs`` (generated prompts do).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Protocol, Sequence

from spar_jax.judge import generation as gen
from spar_jax.judge.templates import DEFAULT_TEMPLATES, Templates
from spar_jax.judge.votes import Judgement, judge

KINDS = ("model", "rules", "hybrid")

Constraints = tuple[tuple[str, ...], tuple[Mapping[str, Any] | None, ...]]  # (instruction ids, their kwargs)


class Judge(Protocol):
    """Labels (instruction, response) items; results in item order. ``k``/``sampling``/``seed`` steer a model."""

    kind: str

    def judge(
        self, items: Sequence[tuple[str, str]], *, k: int, sampling: gen.SamplingParams, seed: int
    ) -> list[Judgement]: ...


@dataclasses.dataclass(frozen=True)
class ModelJudge:
    """The refiner judges: k sampled votes per item in one engine call."""

    engine: Any
    templates: Templates = DEFAULT_TEMPLATES
    kind: str = "model"

    def judge(self, items, *, k, sampling, seed):
        return judge(self.engine, items, k=k, sampling=sampling, seed=seed, templates=self.templates)


def constraints_by_instruction(prompts: Sequence[Mapping[str, Any]]) -> dict[str, Constraints]:
    """{prompt text: (ids, kwargs)} for the prompt records that carry IFEval's constraint fields."""
    out = {}
    for p in prompts:
        ids = p.get("instruction_id_list")
        if ids:
            out[p["prompt"]] = (tuple(ids), tuple(p.get("kwargs") or [None] * len(ids)))
    return out


def rule_judgement(instruction: str, response: str, constraints: Constraints) -> Judgement:
    """One checker vote (strict: every constraint met = "yes") with a checker-written critique."""
    from spar_jax import ifeval
    from spar_jax.spar.bootstrap import critique_text

    ids, kwargs = constraints
    strict, _ = ifeval.check(ids, kwargs, instruction, response)
    critique = critique_text(ids, kwargs, None, strict, response=response)
    return Judgement((critique,), ("yes" if all(strict) else "no",))


def checkable(constraints: Constraints | None) -> bool:
    """True when the checker can verify and describe every constraint (`repair.SUPPORTED_IDS`)."""
    from spar_jax.spar.repair import SUPPORTED_IDS

    return constraints is not None and bool(constraints[0]) and all(i in SUPPORTED_IDS for i in constraints[0])


@dataclasses.dataclass(frozen=True)
class RulesJudge:
    """The IFEval checker judges. Every instruction must be in ``constraints`` and checkable."""

    constraints: Mapping[str, Constraints]
    kind: str = "rules"

    def judge(self, items, *, k=1, sampling=None, seed=0):
        out = []
        for instruction, response in items:
            c = self.constraints.get(instruction)
            if not checkable(c):
                raise ValueError(
                    "judge.kind='rules' needs prompts whose every constraint the IFEval checker can "
                    f"verify; this one cannot be: {instruction[:80]!r}. Use judge.kind='hybrid'."
                )
            out.append(rule_judgement(instruction, response, c))
        return out


@dataclasses.dataclass(frozen=True)
class HybridJudge:
    """The checker for fully checkable prompts, the model (one call for the rest) elsewhere."""

    constraints: Mapping[str, Constraints]
    model: ModelJudge
    kind: str = "hybrid"

    def judge(self, items, *, k, sampling, seed):
        rules = [checkable(self.constraints.get(instruction)) for instruction, _ in items]
        by_model = iter(
            self.model.judge([it for it, r in zip(items, rules) if not r], k=k, sampling=sampling, seed=seed)
        )
        return [
            rule_judgement(i, resp, self.constraints[i]) if r else next(by_model) for (i, resp), r in zip(items, rules)
        ]


def make_judge(
    kind: str, refiner: Any, prompts: Sequence[Mapping[str, Any]] = (), templates: Templates = DEFAULT_TEMPLATES
) -> Judge:
    """The judge of ``kind`` for these prompt records; ``refiner`` is an engine (unused by ``rules``)."""
    if kind not in KINDS:
        raise ValueError(f"judge kind must be one of {KINDS}, got {kind!r}")
    if kind == "model":
        return ModelJudge(refiner, templates)
    constraints = constraints_by_instruction(prompts)
    if kind == "rules":
        return RulesJudge(constraints)
    return HybridJudge(constraints, ModelJudge(refiner, templates))


def checker_verdicts(items: Sequence[tuple[str, str]], constraints: Mapping[str, Constraints]) -> list[bool | None]:
    """The checker's strict verdict per item (None where the prompt carries no constraints), for judge agreement."""
    from spar_jax import ifeval

    out: list[bool | None] = []
    for instruction, response in items:
        c = constraints.get(instruction)
        out.append(None if c is None else all(ifeval.check(c[0], c[1], instruction, response)[0]))
    return out
