"""The IFEval run: answer IFEval's prompts with an engine (greedy, chat template) or take a responses file, score
them with our rule checker, and write summary.json, report.md, results.jsonl and responses.jsonl."""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from typing import Any

from spar_jax import files, ifeval
from spar_jax.eval.summary import base_summary
from spar_jax.judge import generation as gen
from spar_jax.judge.answers import generate_responses
from spar_jax.resumable import sharded

RESPONSES_FILE = "responses.jsonl"


@dataclasses.dataclass(frozen=True)
class IFEvalRunConfig:
    """``prompts_source``: a local JSONL with IFEval's schema or a ``datasets`` name (default ``google/IFEval``).
    ``responses_file``: "" = generate with the engine; else score this JSONL (``prompt``, ``response`` per line).
    ``limit``: the first N prompts only (0 = all). ``label``: names the checkpoint in summaries and plots.
    ``shard_size``: prompts per resumable shard of generated responses (a killed run continues from the next one).
    ``split``: the ``datasets`` split of a named source. ``max_new_tokens``: token budget per response. ``seed``: the
    sampling seed."""

    prompts_source: str = ifeval.DEFAULT_SOURCE
    split: str = "train"
    responses_file: str = ""
    limit: int = 0
    max_new_tokens: int = 1024
    seed: int = 0
    label: str = ""
    shard_size: int = 64

    def __post_init__(self):
        if not isinstance(self.limit, int) or self.limit < 0:
            raise ValueError(f"IFEvalRunConfig.limit must be an int >= 0, got {self.limit!r}")
        if not isinstance(self.shard_size, int) or self.shard_size < 1:
            raise ValueError(f"IFEvalRunConfig.shard_size must be an int >= 1, got {self.shard_size!r}")
        gen.SamplingParams(max_new_tokens=self.max_new_tokens)  # validates max_new_tokens


def load_prompts(settings: IFEvalRunConfig) -> list[ifeval.IFEvalPrompt]:
    prompts = ifeval.load_ifeval_prompts(settings.prompts_source, split=settings.split)
    return prompts[: settings.limit] if settings.limit else prompts


def run(
    engine: gen.Generator | None, settings: IFEvalRunConfig, out_dir: str | os.PathLike, inputs=None
) -> dict[str, Any]:
    """Generates (or reads) the responses, scores them and writes the outputs into ``out_dir``; returns the summary.

    ``engine`` may be None when ``settings.responses_file`` is set. ``inputs`` (a ``fingerprint.StageInputs``: the
    model's identity and settings) keys the cached generation shards, so another model's answers are never reused.
    """
    prompts = load_prompts(settings)
    generation: dict[str, Any] = {}
    if settings.responses_file:
        by_prompt = ifeval.load_responses(settings.responses_file)
        report = ifeval.score_responses(prompts, by_prompt)
        source = settings.responses_file
    else:
        if engine is None:
            raise ValueError("IFEval run: no engine to generate with and no responses_file to score")
        with gen.prompt_source([(p.key, p.prompt) for p in prompts], settings.prompts_source):
            records = sharded(
                os.path.join(out_dir, "shards"),
                prompts,
                settings.shard_size,
                lambda shard, _: generate_responses(
                    engine, shard, max_new_tokens=settings.max_new_tokens, seed=settings.seed
                ),
                keys=[(p.key, p.prompt, settings.max_new_tokens, settings.seed) for p in prompts],
                inputs=inputs,
            )
        files.write_jsonl(os.path.join(out_dir, RESPONSES_FILE), records)
        report = ifeval.score_responses(prompts, [r["response"] for r in records])
        source = "generated (greedy)"
        reasons = Counter(r["finish_reason"] for r in records)
        generation = {
            "finish_reasons": dict(sorted(reasons.items())),
            "mean_new_tokens": sum(r["num_tokens"] for r in records) / len(records),
        }
    extra = base_summary(
        "ifeval",
        settings.label,
        report.metrics,
        settings,
        prompts_source=settings.prompts_source,
        responses=source,
        generation=generation or None,
    )
    extra.pop("metrics")  # write_report adds the report's own aggregates (metrics included)
    title = f"IFEval — {settings.label}" if settings.label else "IFEval"
    ifeval.write_report(report, out_dir, extra=extra, title=title)
    return {**extra, **report.summary()}
