"""Greedy answers of a model to prompts, one user turn each: how the loop's per-iteration IFEval scoring and the
``ifeval`` stage both generate, so their resumable shards hold the same records for the same model and settings."""

from __future__ import annotations

from typing import Any, Sequence

from spar_jax.judge import generation as gen
from spar_jax.judge.templates import actor_messages


def generate_responses(
    engine: gen.Generator, prompts: Sequence[Any], *, max_new_tokens: int, seed: int = 0
) -> list[dict[str, Any]]:
    """Greedy answers, one user turn through the chat template (no system prompt added), in prompt order.

    ``prompts``: objects with a ``prompt`` attribute (``ifeval.IFEvalPrompt``).

    Returns IFEval response records: ``prompt``, ``response``, ``finish_reason``, ``num_tokens``.
    """
    sampling = gen.SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)
    outputs = gen.generate(engine, [actor_messages(p.prompt) for p in prompts], n=1, sampling=sampling, seed=seed)
    return [
        {"prompt": p.prompt, "response": c.text, "finish_reason": c.finish_reason, "num_tokens": len(c.token_ids)}
        for p, (c,) in zip(prompts, outputs)
    ]
