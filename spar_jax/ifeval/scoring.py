"""Strict and loose IFEval scoring of responses, and the aggregate report.

Strict: the response itself must be non-blank and pass. Loose (the reference's
upper bound): any of 8 variants passes — the response, the response with its
first line, its last line, or both removed (those three are then stripped),
each also with every "*" removed.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from typing import Any, Callable, Mapping, Sequence

from .data import IFEvalPrompt, load_responses, prompt_from_record
from .registry import build_checker

METRIC_NAMES = ("prompt_level_strict", "prompt_level_loose", "instruction_level_strict", "instruction_level_loose")


def response_variants(response: str) -> tuple[str, ...]:
    """The 8 loose-mode variants of ``response``, in the reference's order."""
    lines = response.split("\n")
    no_first = "\n".join(lines[1:]).strip()
    no_last = "\n".join(lines[:-1]).strip()
    no_both = "\n".join(lines[1:-1]).strip()
    return (
        response,
        response.replace("*", ""),
        no_first,
        no_last,
        no_both,
        no_first.replace("*", ""),
        no_last.replace("*", ""),
        no_both.replace("*", ""),
    )


def _evaluate(check: Callable[[str], bool], variants: tuple[str, ...]) -> tuple[bool, bool]:
    """(strict, loose) for one checker; variants[0] is the response itself.

    Checkers are deterministic, so repeated variants are tried once.
    """
    response = variants[0]
    if response.strip() and check(response):
        return True, True
    seen = {response}
    for variant in variants[1:]:
        if variant in seen:
            continue
        seen.add(variant)
        if variant.strip() and check(variant):
            return False, True
    return False, False


def check(
    instruction_id_list: Sequence[str], kwargs: Sequence[Mapping[str, Any] | None], prompt: str, response: str
) -> tuple[list[bool], list[bool]]:
    """Follows-instruction flags for one response, strict and loose.

    ``kwargs[i]`` belongs to ``instruction_id_list[i]`` (None values ignored).
    ``prompt`` is accepted for parity with the reference, which passes it to
    instructions that declare a ``prompt`` argument; none of the 25 does.
    Raises ValueError for an unknown id or bad kwargs (naming the id and key).
    """
    if not isinstance(response, str):
        raise ValueError(f"response must be a string, got {type(response).__name__}")
    if not isinstance(prompt, str):
        raise ValueError(f"prompt must be a string, got {type(prompt).__name__}")
    if len(kwargs) != len(instruction_id_list):
        raise ValueError(f"got {len(instruction_id_list)} instruction ids but {len(kwargs)} kwargs dicts")
    checkers = [build_checker(i, kw) for i, kw in zip(instruction_id_list, kwargs)]
    variants = response_variants(response)
    flags = [_evaluate(c, variants) for c in checkers]
    return [s for s, _ in flags], [lo for _, lo in flags]


@dataclasses.dataclass(frozen=True)
class PromptResult:
    key: int
    prompt: str
    response: str
    instruction_id_list: tuple[str, ...]
    strict: tuple[bool, ...]
    loose: tuple[bool, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "prompt": self.prompt,
            "response": self.response,
            "instruction_id_list": list(self.instruction_id_list),
            "follow_all_instructions_strict": all(self.strict),
            "follow_all_instructions_loose": all(self.loose),
            "follow_instruction_list_strict": list(self.strict),
            "follow_instruction_list_loose": list(self.loose),
        }


def score_prompt(prompt: IFEvalPrompt, response: str) -> PromptResult:
    strict, loose = check(prompt.instruction_id_list, prompt.kwargs, prompt.prompt, response)
    return PromptResult(prompt.key, prompt.prompt, response, prompt.instruction_id_list, tuple(strict), tuple(loose))


def _accuracy_table(pairs: list[tuple[str, bool, bool]]) -> dict[str, dict[str, float | int]]:
    """{name: {count, strict, loose}} accuracies from (name, strict, loose) triples."""
    totals: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0, 0])
    for name, strict, loose in pairs:
        row = totals[name]
        row[0] += 1
        row[1] += strict
        row[2] += loose
    return {name: {"count": n, "strict": s / n, "loose": lo / n} for name, (n, s, lo) in sorted(totals.items())}


@dataclasses.dataclass(frozen=True)
class Report:
    """Per-prompt results and IFEval's aggregate numbers (fractions in [0, 1]).

    ``metrics`` holds prompt-level and instruction-level accuracy, strict and
    loose, and ``average`` (their mean, the headline). ``per_instruction`` is
    keyed by instruction id, ``per_category`` by the part before ":".
    """

    results: tuple[PromptResult, ...]
    metrics: dict[str, float]
    per_instruction: dict[str, dict[str, float | int]]
    per_category: dict[str, dict[str, float | int]]
    num_prompts: int
    num_instructions: int

    @classmethod
    def from_results(cls, results: Sequence[PromptResult]) -> "Report":
        if not results:
            raise ValueError("cannot build an IFEval report from zero prompts")
        pairs = [(i, s, lo) for r in results for i, s, lo in zip(r.instruction_id_list, r.strict, r.loose)]
        n_prompts, n_instr = len(results), len(pairs)
        metrics = {
            "prompt_level_strict": sum(all(r.strict) for r in results) / n_prompts,
            "prompt_level_loose": sum(all(r.loose) for r in results) / n_prompts,
            "instruction_level_strict": sum(s for _, s, _ in pairs) / max(n_instr, 1),
            "instruction_level_loose": sum(lo for _, _, lo in pairs) / max(n_instr, 1),
        }
        metrics["average"] = sum(metrics[m] for m in METRIC_NAMES) / len(METRIC_NAMES)
        return cls(
            results=tuple(results),
            metrics=metrics,
            per_instruction=_accuracy_table(pairs),
            per_category=_accuracy_table([(i.split(":")[0], s, lo) for i, s, lo in pairs]),
            num_prompts=n_prompts,
            num_instructions=n_instr,
        )

    def summary(self) -> dict[str, Any]:
        """JSON-ready aggregate numbers (everything but the per-prompt results)."""
        return {
            "metrics": dict(self.metrics),
            "num_prompts": self.num_prompts,
            "num_instructions": self.num_instructions,
            "per_instruction": self.per_instruction,
            "per_category": self.per_category,
        }


def _responses_by_prompt(prompts: Sequence[IFEvalPrompt], responses: Any) -> list[str]:
    if isinstance(responses, (str, os.PathLike)):
        responses = load_responses(responses)
    if isinstance(responses, Mapping):
        missing = [p for p in prompts if p.prompt not in responses]
        if missing:
            first = missing[0]
            raise ValueError(
                f"{len(missing)} of {len(prompts)} IFEval prompts have no response; first "
                f"missing: key={first.key} prompt={first.prompt[:80]!r}"
            )
        out = [responses[p.prompt] for p in prompts]
    else:
        out = list(responses)
        if len(out) != len(prompts):
            raise ValueError(f"got {len(out)} responses for {len(prompts)} IFEval prompts")
    for p, r in zip(prompts, out):
        if not isinstance(r, str):
            raise ValueError(f"response for IFEval prompt key={p.key} must be a string, got {type(r).__name__}")
    return out


def score_responses(prompts: Sequence[IFEvalPrompt | Mapping[str, Any]], responses: Any) -> Report:
    """Scores one response per prompt and aggregates the IFEval report.

    ``responses`` is a ``{prompt text: response}`` mapping (extra prompts are
    ignored), a sequence of strings aligned with ``prompts``, or the path of a
    JSONL with ``prompt`` and ``response`` fields. Raises ValueError when a
    prompt has no response.
    """
    prompts = [p if isinstance(p, IFEvalPrompt) else prompt_from_record(p) for p in prompts]
    texts = _responses_by_prompt(prompts, responses)
    return Report.from_results([score_prompt(p, r) for p, r in zip(prompts, texts)])
