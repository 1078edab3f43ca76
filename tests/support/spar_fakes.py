"""A scripted, deterministic engine for testing the SPaR stages without a model.

`ScriptedEngine` satisfies `spar_jax.judge.generation.Engine`; it routes each request to a script by kind
(actor prompt, judge prompt, 3-turn refine prompt) and logs every call. `TreeWorld` scripts a refiner whose
children are named after their parents ("r", "r.0", "r.0.2", ...) and whose votes are set per response name.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from typing import Callable, Sequence

from spar_jax.judge.templates import Templates


@dataclasses.dataclass(frozen=True)
class Completion:
    text: str
    token_ids: tuple[int, ...] = ()
    logprobs: tuple[float, ...] = ()
    finish_reason: str = "stop"


@dataclasses.dataclass(frozen=True)
class Result:
    completions: tuple[Completion, ...]


# Compact templates so the fake can read (instruction, response) back out of a judge prompt.
TEMPLATES = Templates(
    judge="JUDGE\n<i>{instruction}</i>\n<r>{response}</r>\nend with Final Judgement: Yes/No",
    refine="REFINE: reflect, then the output between [[start]] and [[end]]",
)
_JUDGE_RE = re.compile(r"\AJUDGE\n<i>(.*)</i>\n<r>(.*)</r>\n", re.S)


def vote_text(label: str, tag: str = "") -> str:
    """A judgment text for label "y" (Yes), "n" (No) or "x" (invalid: no verdict)."""
    verdict = {"y": "Final Judgement: Yes", "n": "Final Judgement: No", "x": "I cannot decide."}[label]
    return f"critique {tag}\n{verdict}"


@dataclasses.dataclass(frozen=True)
class Call:
    kind: str  # "actor" | "judge" | "refine"
    requests: tuple
    n: int
    seed: int
    sampling: dict


class ScriptedEngine:
    """Scripts: actor(instruction, n) -> texts; judge(instruction, response, n) -> texts;
    refine(instruction, parent_response, critique, n) -> texts. A text may be a (text, finish_reason) pair."""

    def __init__(self, *, actor: Callable | None = None, judge: Callable | None = None, refine: Callable | None = None):
        self.scripts = {"actor": actor, "judge": judge, "refine": refine}
        self.calls: list[Call] = []

    @staticmethod
    def kind(request: Sequence[dict]) -> str:
        if len(request) == 3:
            return "refine"
        return "judge" if request[0]["content"].startswith("JUDGE\n") else "actor"

    def generate(self, requests, *, max_new_tokens, temperature=0.0, top_p=1.0, top_k=0, n=1, seed=0, stop=None):
        kinds = {self.kind(r) for r in requests}
        assert len(kinds) == 1, f"one call mixed request kinds {kinds}"
        kind = kinds.pop()
        sampling = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k, stop=stop)
        self.calls.append(Call(kind, tuple(map(tuple, requests)), n, seed, sampling))
        results = []
        for r in requests:
            if kind == "actor":
                texts = self.scripts["actor"](r[0]["content"], n)
            else:
                instruction, response = _JUDGE_RE.match(r[0]["content"]).groups()
                if kind == "judge":
                    texts = self.scripts["judge"](instruction, response, n)
                else:
                    texts = self.scripts["refine"](instruction, response, r[1]["content"], n)
            assert len(texts) == n
            results.append(
                Result(
                    tuple(Completion(t) if isinstance(t, str) else Completion(t[0], finish_reason=t[1]) for t in texts)
                )
            )  # a script may give (text, finish_reason)
        return results

    def count(self, kind: str) -> int:
        return sum(c.kind == kind for c in self.calls)

    @staticmethod
    def judged(call: Call) -> list[str]:
        """The responses a judge or refine call was about, in request order."""
        return [_JUDGE_RE.match(r[0]["content"]).group(2) for r in call.requests]


class TreeWorld(ScriptedEngine):
    """A refiner over named responses. The c-th child ever generated from response P is "P.c" (retries count);
    `yes[name]` = number of Yes votes out of n (rest No, default 0); `rounds[name]` = vote patterns such as
    "yynnx" for successive judging rounds (the last one repeats); `unparseable` = child names whose output has no
    markers; `alias[name]` = the text emitted instead of the name (to produce repeated responses)."""

    def __init__(self, *, yes=None, rounds=None, unparseable=(), alias=None):
        super().__init__(judge=self._judge, refine=self._refine)
        self.yes = dict(yes or {})
        self.rounds = dict(rounds or {})
        self.unparseable = set(unparseable)
        self.alias = dict(alias or {})
        self.children = Counter()
        self.judge_rounds = Counter()

    def _refine(self, instruction, parent, critique, n):
        out = []
        for _ in range(n):
            name = f"{parent}.{self.children[parent]}"
            self.children[parent] += 1
            if name in self.unparseable:
                out.append(f"reflection on {name}, but I forgot the markers")
            else:
                out.append(f"reflection on {parent}\n[[start]]\n{self.alias.get(name, name)}\n[[end]]")
        return out

    def _judge(self, instruction, response, n):
        r = self.judge_rounds[response]
        self.judge_rounds[response] += 1
        if response in self.rounds:
            patterns = self.rounds[response]
            pattern = patterns[min(r, len(patterns) - 1)]
        else:
            y = self.yes.get(response, 0)
            pattern = "y" * y + "n" * (n - y)
        assert len(pattern) == n, (response, pattern, n)
        return [vote_text(ch, f"{response}#{i}") for i, ch in enumerate(pattern)]
