"""Test doubles for the evaluations: an engine that answers each request with a plain function, and small data files."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable

from spar_fakes import Completion, Result


@dataclasses.dataclass(frozen=True)
class Call:
    requests: tuple
    n: int
    seed: int
    sampling: dict


class FnEngine:
    """``fn(messages, n) -> list of n texts`` answers each request; every call is logged in ``calls``.
    Token ids are one per whitespace-separated word, so lengths are checkable."""

    def __init__(self, fn: Callable[[list[dict], int], list[str]]):
        self.fn = fn
        self.calls: list[Call] = []

    def generate(self, requests, *, max_new_tokens, temperature=0.0, top_p=1.0, top_k=0, n=1, seed=0, stop=None):
        sampling = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k, stop=stop)
        self.calls.append(Call(tuple(map(tuple, requests)), n, seed, sampling))
        results = []
        for r in requests:
            texts = self.fn(list(r), n)
            assert len(texts) == n
            results.append(Result(tuple(Completion(t, tuple(range(len(t.split())))) for t in texts)))
        return results


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# Three IFEval prompts whose rule outcomes are easy to reason about.
IFEVAL_PROMPTS = [
    {"key": 1, "prompt": "Say hi without commas.", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]},
    {"key": 2, "prompt": "Say hi in lowercase.", "instruction_id_list": ["change_case:english_lowercase"],
     "kwargs": [{}]},
    {"key": 3, "prompt": "Say hi in lowercase, no commas.",
     "instruction_id_list": ["change_case:english_lowercase", "punctuation:no_comma"], "kwargs": [{}, {}]},
]  # fmt: skip
