"""Judgment and refinement prompts, the chat messages built from them, and the parsers of the refiner's output.

Output protocol (kept from the method; the wording of the prompts is ours):
- a judgment ends with "Final Judgement: Yes" or "Final Judgement: No";
- a refinement is a reflection followed by the refined response between `[[start]]` and `[[end]]`.

The same `Templates` are used to build training data and to prompt at inference time; a config may point at a
JSON file that overrides either template.
"""

from __future__ import annotations

import dataclasses
import json
import re
import string
from pathlib import Path
from typing import Literal

from spar_jax.judge.generation import Message

JUDGEMENT_MARKER = "Final Judgement"
START_MARKER = "[[start]]"
END_MARKER = "[[end]]"

DEFAULT_JUDGE = """\
Decide whether the response below follows the instruction, constraint by constraint.

[Instruction]
{instruction}

[Response]
{response}

How to judge:
1. List every requirement the instruction sets: format, length, wording, keywords, language, tone, structure and \
anything else it asks for.
2. For each requirement, point to the part of the response that concerns it and say whether it is fully met. A \
requirement that is only partly met counts as not met.
3. Judge instruction following only; do not reward or punish anything the instruction does not ask for.

End your answer with one line that reads "Final Judgement: Yes" if every requirement is met, or \
"Final Judgement: No" if any requirement is missed."""

DEFAULT_REFINE = """\
Using your judgement above, improve the response so that it meets every requirement of the instruction while \
keeping whatever was already right. First write a short reflection on what must change and how. Then write the \
marker [[start]] on its own line, the complete improved response, and the marker [[end]] on its own line. Put \
nothing but the improved response between the two markers."""

_REQUIRED = {
    "judge": ({"instruction", "response"}, {"instruction", "response"}, (JUDGEMENT_MARKER,)),
    "refine": (set(), {"instruction"}, (START_MARKER, END_MARKER)),
}


def _fields(template: str, where: str) -> set[str]:
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as e:  # unbalanced braces
        raise ValueError(f"{where}: bad template ({e}); write literal braces as '{{{{' and '}}}}'") from None
    return names


def _validate(values: dict, where: str) -> None:
    for key, (required, allowed, markers) in _REQUIRED.items():
        text = values[key]
        if not isinstance(text, str):
            raise ValueError(f"{where}: key '{key}' must be a string, got {type(text).__name__}")
        names = _fields(text, f"{where}: key '{key}'")
        if not required <= names <= allowed:
            raise ValueError(
                f"{where}: key '{key}' must use the fields {sorted(required)} (allowed: {sorted(allowed)}), "
                f"found {sorted(names)}"
            )
        for marker in markers:
            if marker not in text:
                raise ValueError(f"{where}: key '{key}' must mention the protocol marker {marker!r}")


@dataclasses.dataclass(frozen=True)
class Templates:
    """`judge` uses `{instruction}` and `{response}`; `refine` (the third chat turn) may use `{instruction}`.

    Both must mention their protocol markers, so an override cannot silently break the parsers.
    """

    judge: str = DEFAULT_JUDGE
    refine: str = DEFAULT_REFINE

    def __post_init__(self):
        _validate(self.to_dict(), "Templates")

    def to_dict(self) -> dict[str, str]:
        return {"judge": self.judge, "refine": self.refine}

    @classmethod
    def from_file(cls, path: str | Path) -> "Templates":
        """Reads a JSON object with any of the keys "judge", "refine"; missing keys keep the defaults."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
        except UnicodeDecodeError as e:
            line = path.read_bytes()[: e.start].count(b"\n") + 1
            raise ValueError(f"{path}:{line}: not UTF-8 text") from None
        except RecursionError:
            raise ValueError(f"{path}:1: invalid JSON: nested too deeply") from None
        except OSError as e:
            raise ValueError(f"{path}: cannot read templates file: {e.strerror}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object with keys 'judge' and/or 'refine'")
        unknown = set(data) - set(_REQUIRED)
        if unknown:
            raise ValueError(f"{path}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_REQUIRED)}")
        merged = {**cls().to_dict(), **data}
        _validate(merged, str(path))
        return cls(**merged)


DEFAULT_TEMPLATES = Templates()


def actor_messages(instruction: str) -> list[Message]:
    """The actor's prompt: the instruction as one user turn, no system prompt."""
    return [{"role": "user", "content": instruction}]


def judge_messages(instruction: str, response: str, templates: Templates = DEFAULT_TEMPLATES) -> list[Message]:
    """One user turn asking the refiner to judge `response` against `instruction`."""
    return [{"role": "user", "content": templates.judge.format(instruction=instruction, response=response)}]


def refine_messages(
    instruction: str, response: str, critique: str, templates: Templates = DEFAULT_TEMPLATES
) -> list[Message]:
    """Three turns: judge prompt on (instruction, response); the refiner's critique; the refine request."""
    return [
        *judge_messages(instruction, response, templates),
        {"role": "assistant", "content": critique},
        {"role": "user", "content": templates.refine.format(instruction=instruction)},
    ]


_MARKER_RE = re.compile(r"Final Judge?ment")
_LABEL_RE = re.compile(r"\b(Yes|No)\b")


def parse_judgement(text: str) -> Literal["yes", "no"] | None:
    """The label of one judgment, or None when the vote is invalid.

    Rule: look at the text after the first "Final Judgement" marker (the spelling "Final Judgment" is accepted
    too); the first of "Yes" / "No" found there is the label (so if both occur, the earlier one wins); if neither
    occurs, or there is no marker, the vote is invalid.

    Matching choice: "Yes" and "No" are matched case-sensitively as *whole words* (regex `\\b(Yes|No)\\b`), so
    "No.", "**No**" and "No," count but "Not", "None", "Nothing" and "Yesterday" do not. The reference
    implementation matches substrings, where "Final Judgement: Not met" would count as "No" and "None" as "No";
    here such votes are invalid (None) rather than guessed.
    """
    marker = _MARKER_RE.search(text)
    if marker is None:
        return None
    label = _LABEL_RE.search(text, marker.end())
    return None if label is None else label.group(1).lower()  # type: ignore[return-value]


def parse_refinement(text: str) -> str | None:
    """The refined response in a refinement output, stripped; None if unparseable or empty.

    Takes the text between the *last* `[[start]]` and the first `[[end]]` after it, so a reflection that mentions
    the markers before the real output does not confuse the parser. A missing `[[end]]` (e.g. a truncated
    generation) makes the output unparseable.
    """
    start = text.rfind(START_MARKER)
    if start < 0:
        return None
    end = text.find(END_MARKER, start + len(START_MARKER))
    if end < 0:
        return None
    refined = text[start + len(START_MARKER) : end].strip()
    return refined or None
