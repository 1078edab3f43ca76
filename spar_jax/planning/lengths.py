"""Output-length distributions of the sampling stages, measured from a run's shards or stated defaults.

Three kinds of generated text: ``answer`` (the actor's responses), ``judgement`` (a judge's vote text) and
``refinement`` (the refiner's full output: thought and refined response). A measured profile keeps, per kind, every
sample's length as a fraction of the cap it was sampled with (a sample cut by the cap is 1.0), so a plan with other
caps scales the same shape: lengths = round(fraction * cap). The defaults (no run given) are exponential with the
stated mean tokens, cut at the cap.

``from_run(workdir)`` reads a pipeline workdir: ``config.json`` (the actor's tokenizer, the caps, the judge kind),
``iter_*/mine/shard_*.jsonl`` (answers with their finish reasons; judgements when the judge is a model) and
``iter_*/search/shard_*.jsonl`` (every refined node's refiner output and, with a model judge, its judgements). Token
counts come from the run's own tokenizer, plus one for the end-of-sequence token of a sample that stopped.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from typing import Sequence

import numpy as np

KINDS = ("answer", "judgement", "refinement")
DEFAULT_MEAN_TOKENS = {"answer": 400, "judgement": 250, "refinement": 600}


@dataclasses.dataclass(frozen=True)
class LengthProfile:
    """Per kind, measured fractions of the cap (None: the default exponential with ``mean_tokens``)."""

    source: str
    fractions: dict[str, tuple[float, ...]] = dataclasses.field(default_factory=dict)
    mean_tokens: dict[str, int] = dataclasses.field(default_factory=lambda: dict(DEFAULT_MEAN_TOKENS))

    def draw(self, kind: str, cap: int, count: int, seed: int = 0) -> np.ndarray:
        """``count`` output lengths (int, in [1, cap]) of ``kind`` under a cap of ``cap`` tokens (deterministic for
        a seed)."""
        rng = np.random.default_rng([seed, KINDS.index(kind)])
        measured = self.fractions.get(kind)
        if measured:
            x = np.rint(rng.choice(np.asarray(measured), size=count) * cap)
        else:
            x = np.ceil(rng.exponential(self.mean_tokens[kind], size=count))
        return np.clip(x, 1, cap).astype(np.int64)

    def describe(self) -> str:
        parts = []
        for kind in KINDS:
            f = self.fractions.get(kind)
            parts.append(
                f"{kind}s measured ({len(f)}, mean {np.mean(f):.0%} of the cap)"
                if f
                else f"{kind}s exponential, mean {self.mean_tokens[kind]} tokens (default)"
            )
        return f"output lengths: {self.source}: " + "; ".join(parts)


DEFAULTS = LengthProfile("stated defaults")


def _tokens(tokenizer, texts: Sequence[str]) -> list[int]:
    return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]] if texts else []


def _fractions(lengths: Sequence[int], stopped: Sequence[bool], cap: int) -> list[float]:
    """A stopped sample: (tokens + the end-of-sequence token) / cap; a cut one: 1.0."""
    return [1.0 if not s else min((n + 1) / cap, 1.0) for n, s in zip(lengths, stopped)]


def from_run(workdir: str, tokenizer=None) -> LengthProfile:
    """The lengths of every sample a pipeline workdir holds (see the module docstring). Kinds the run has none of
    keep the default. Raises ValueError naming the file when ``workdir`` is not a run directory."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise ValueError(f"--lengths_from={workdir}: no config.json (not a spar_jax run directory)")
    with open(path) as f:
        cfg = json.load(f)
    try:
        caps = {
            "answer": cfg["mining"]["actor_max_new_tokens"],
            "mine_judgement": cfg["mining"]["judge_max_new_tokens"],
            "refinement": cfg["search"]["refine_max_new_tokens"],
            "search_judgement": cfg["search"]["judge_max_new_tokens"],
        }
        model_judge = cfg["judge"]["kind"] == "model"
        actor = cfg["actor"]["path"]
    except KeyError as e:
        raise ValueError(f"{path}: missing key {e}") from None
    if tokenizer is None:
        from spar_jax.models.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(actor)
    out: dict[str, list[float]] = {k: [] for k in KINDS}
    for shard in sorted(glob.glob(os.path.join(workdir, "iter_*", "mine", "shard_*.jsonl"))):
        answers, stopped, votes = [], [], []
        for line in open(shard):
            for s in json.loads(line)["samples"]:
                answers.append(s["response"])
                stopped.append(s["finish_reason"] == "stop")
                votes += s["judgement"]["texts"] if model_judge else []
        out["answer"] += _fractions(_tokens(tokenizer, answers), stopped, caps["answer"])
        out["judgement"] += _fractions(_tokens(tokenizer, votes), [True] * len(votes), caps["mine_judgement"])
    for shard in sorted(glob.glob(os.path.join(workdir, "iter_*", "search", "shard_*.jsonl"))):
        outputs, votes = [], []
        for line in open(shard):
            for node in json.loads(line)["nodes"][1:]:
                outputs.append(node["output"] or "")
                votes += node["judgement"]["texts"] if model_judge else []
        out["refinement"] += _fractions(_tokens(tokenizer, outputs), [True] * len(outputs), caps["refinement"])
        out["judgement"] += _fractions(_tokens(tokenizer, votes), [True] * len(votes), caps["search_judgement"])
    if not any(out.values()):
        raise ValueError(f"--lengths_from={workdir}: no mining or search shards (iter_*/mine, iter_*/search)")
    return LengthProfile(f"measured in {workdir}", {k: tuple(v) for k, v in out.items() if v})
