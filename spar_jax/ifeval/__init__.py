"""IFEval scorer (Zhou et al., 2023), reimplemented to run offline.

All 25 instruction types of Google's ``instruction_following_eval`` with the
reference's semantics, strict and loose. Typical use::

    from spar_jax import ifeval
    strict, loose = ifeval.check(["punctuation:no_comma"], [{}], prompt, response)

    prompts = ifeval.load_ifeval_prompts("input_data.jsonl")   # or "google/IFEval"
    report = ifeval.score_responses(prompts, "responses.jsonl")  # or {prompt: response}
    ifeval.write_report(report, "out/")

Command line: ``python -m spar_jax.ifeval --prompts P --responses R --out DIR``.
"""

from .data import DEFAULT_SOURCE, IFEvalPrompt, load_ifeval_prompts, load_responses
from .registry import INSTRUCTION_IDS, build_checker
from .report import render_markdown, write_report
from .scoring import PromptResult, Report, check, response_variants, score_prompt, score_responses

__all__ = [
    "DEFAULT_SOURCE",
    "INSTRUCTION_IDS",
    "IFEvalPrompt",
    "PromptResult",
    "Report",
    "build_checker",
    "check",
    "load_ifeval_prompts",
    "load_responses",
    "render_markdown",
    "response_variants",
    "score_prompt",
    "score_responses",
    "write_report",
]
