"""FollowBench (Jiang et al., 2024) data and the checks an LLM judge makes on it.

Each file ``<category>_constraints.json`` is a JSON array of records (``example_id``, ``level`` 0–5,
``instruction``, optional ``answer``); level n of an example is its level-0 instruction rewritten with n constraints,
one more per level (some level-0 instructions are empty). A response at level n is checked constraint by
constraint: check j (1..n) asks whether the response satisfies the constraint that the step from level j-1 to level
j added. Examples without a level-0 record (the "example" category) get one check of the whole instruction, with the
reference answer when the record has one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import string
from pathlib import Path
from typing import Any, Sequence

from spar_jax.eval.remote import is_url, read_json
from spar_jax.judge.templates import JUDGEMENT_MARKER

DEFAULT_SOURCE = "https://raw.githubusercontent.com/YJiangcm/FollowBench/6278f4c1377b4eafab737267b8b21acd52ea0e52/data"
CATEGORIES = ("content", "situation", "style", "format", "example", "mixed")
LEVELS = (1, 2, 3, 4, 5)

CONSTRAINT_JUDGE = """\
You are checking whether a response satisfies one constraint of an instruction.

The instruction was written step by step: each step rewrote the previous version and added one new constraint. \
Here is one step.

[Version before the step]
{previous}

[Version after the step]
{current}

The assistant was given this final instruction:

[Final instruction]
{instruction}

[Response]
{response}

First name the constraint that the step added (what the version after the step asks for that the version before \
it does not). Then check the response against that constraint only, pointing to the relevant part of the response. \
A constraint that is only partly met counts as not met.

End your answer with one line that reads "Final Judgement: Yes" if the response satisfies the constraint, or \
"Final Judgement: No" if it does not."""

WHOLE_JUDGE = """\
Decide whether the response below follows the instruction, including every constraint it sets.

[Instruction]
{instruction}
{reference}
[Response]
{response}

List the constraints of the instruction (content, format, style, length, examples to imitate) and check each one \
against the response. A constraint that is only partly met counts as not met.

End your answer with one line that reads "Final Judgement: Yes" if every constraint is met, or \
"Final Judgement: No" if any is missed."""

# Some upstream level-0 instructions are empty: then the whole level-1 instruction is the first constraint.
EMPTY_PREVIOUS = "(empty: everything the version after the step asks for is the added constraint)"
REFERENCE_BLOCK = "\n[Reference answer: the expected content and format]\n{answer}\n"
_TEMPLATE_FIELDS = {
    "constraint": {"previous", "current", "instruction", "response"},
    "whole": {"instruction", "reference", "response"},
}


@dataclasses.dataclass(frozen=True)
class Record:
    category: str
    example_id: int
    level: int
    instruction: str
    answer: str | None = None


@dataclasses.dataclass(frozen=True)
class Check:
    """One judge question about the response to ``record``: constraint ``index`` (1-based; 0 = whole instruction)."""

    record: Record
    index: int
    previous: str = ""
    current: str = ""


@dataclasses.dataclass(frozen=True)
class JudgeTemplates:
    """``constraint`` uses {previous} {current} {instruction} {response}; ``whole`` uses {instruction} {reference}
    {response}. Both must end with the SPaR "Final Judgement: Yes/No" protocol, parsed by ``parse_judgement``."""

    constraint: str = CONSTRAINT_JUDGE
    whole: str = WHOLE_JUDGE

    def __post_init__(self):
        for key, fields in _TEMPLATE_FIELDS.items():
            text = getattr(self, key)
            if not isinstance(text, str):
                raise ValueError(f"FollowBench templates: key {key!r} must be a string")
            try:
                found = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
            except ValueError as e:
                raise ValueError(f"FollowBench templates: key {key!r}: bad template ({e})") from None
            if found != fields or JUDGEMENT_MARKER not in text:
                raise ValueError(
                    f"FollowBench templates: key {key!r} must use exactly the fields {sorted(fields)} "
                    f"(found {sorted(found)}) and mention {JUDGEMENT_MARKER!r}"
                )

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "JudgeTemplates":
        """A JSON object with any of the keys "constraint", "whole"; missing keys keep ours."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: cannot read FollowBench judge templates: {e}") from None
        if not isinstance(data, dict) or set(data) - set(_TEMPLATE_FIELDS):
            raise ValueError(f"{path}: expected a JSON object with keys among {sorted(_TEMPLATE_FIELDS)}")
        try:
            return cls(**data)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    def render(self, check: Check, response: str) -> str:
        r = check.record
        if check.index:
            return self.constraint.format(
                previous=check.previous.strip() or EMPTY_PREVIOUS,
                current=check.current,
                instruction=r.instruction,
                response=response,
            )
        reference = REFERENCE_BLOCK.format(answer=r.answer) if r.answer else ""
        return self.whole.format(instruction=r.instruction, reference=reference, response=response)


def category_location(source: str, category: str) -> str:
    name = f"{category}_constraints.json"
    return f"{source.rstrip('/')}/{name}" if is_url(source) else os.path.join(source, name)


def parse_records(data: Any, category: str, where: str) -> list[Record]:
    """Validates one category file into records; (example_id, level) must be unique."""
    if not isinstance(data, list):
        raise ValueError(f"{where}: expected a JSON array of FollowBench records, got {type(data).__name__}")
    out, seen = [], set()
    for i, r in enumerate(data):
        if not isinstance(r, dict):
            raise ValueError(f"{where}: record {i}: expected a JSON object")
        eid, level, instruction = r.get("example_id"), r.get("level"), r.get("instruction")
        if not isinstance(eid, int) or isinstance(eid, bool):
            raise ValueError(f"{where}: record {i}: key 'example_id' must be an integer, got {eid!r}")
        if not isinstance(level, int) or isinstance(level, bool) or not 0 <= level <= 5:
            raise ValueError(f"{where}: record {i}: key 'level' must be an integer 0-5, got {level!r}")
        if not isinstance(instruction, str) or (level > 0 and not instruction.strip()):
            raise ValueError(f"{where}: record {i}: key 'instruction' must be a string, non-empty above level 0")
        answer = r.get("answer")
        if answer is not None and not isinstance(answer, str):
            raise ValueError(f"{where}: record {i}: key 'answer' must be a string")
        if (eid, level) in seen:
            raise ValueError(f"{where}: record {i}: duplicate (example_id {eid}, level {level})")
        seen.add((eid, level))
        out.append(Record(category, eid, level, instruction, answer or None))
    return out


def load_followbench(
    source: str = DEFAULT_SOURCE, categories: Sequence[str] = CATEGORIES, limit: int = 0
) -> list[Record]:
    """Every record (all levels, 0 included) of ``categories``; with ``limit`` > 0 only the first ``limit``
    example ids of each category (in file order)."""
    records = []
    for category in categories:
        location = category_location(source, category)
        loaded = parse_records(read_json(location, f"FollowBench category {category}"), category, location)
        if limit:
            keep = list(dict.fromkeys(r.example_id for r in loaded))[:limit]
            loaded = [r for r in loaded if r.example_id in set(keep)]
        records += loaded
    return records


def build_checks(records: Sequence[Record], levels: Sequence[int] = LEVELS) -> list[list[Check]]:
    """The checks for each record whose level is in ``levels``, in record order (one list per evaluated record).

    A level-n record gets n constraint checks when levels 0..n of its example all exist, else one whole check.
    """
    by_example = {(r.category, r.example_id, r.level): r for r in records}
    out = []
    for r in records:
        if r.level not in levels:
            continue
        chain = [by_example.get((r.category, r.example_id, lv)) for lv in range(r.level + 1)]
        if all(chain):
            out.append([Check(r, j, chain[j - 1].instruction, chain[j].instruction) for j in range(1, r.level + 1)])
        else:
            out.append([Check(r, 0)])
    return out
