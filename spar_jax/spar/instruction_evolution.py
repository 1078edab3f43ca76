"""LLM instruction evolution: rewrite seed instructions into constraint-heavy ones with any model through the engine.

Per the method: one main constraint type drawn uniformly from the 14-type taxonomy plus 1–3 more; math/coding seeds
are answered "None" by the model and skipped. The request is ours; like the authors' it shows the taxonomy, names the
main type and asks for the rewrite between ``[[start]]`` and ``[[end]]``. ``prompts.evolve_model`` picks the model.
"""

from __future__ import annotations

import random
from typing import Any, Sequence

from spar_jax.judge.generation import derive_seed

TAXONOMY = {
    "Format": ("length", "text format (JSON, Markdown, list, table, bullets, postscript)",
               "character format (upper, lower or mixed case, letter frequency)", "template", "punctuation",
               "numeric format"),
    "Content": ("keyword (include, exclude or frequency)", "symbol", "sentence (start, end, include, syntax)",
                "genre"),
    "General": ("language", "situation (role-play, reasoning, topic)", "language style", "sentiment"),
}  # fmt: skip
CONSTRAINT_TYPES = tuple(t for group in TAXONOMY.values() for t in group)
CONSTRAINT_GROUP = {t: group for group, types in TAXONOMY.items() for t in types}
EVOLVE_START, EVOLVE_END = "[[start]]", "[[end]]"

EVOLVE_TEMPLATE = (
    "Rewrite the instruction below into a more specific and harder instruction-following task by adding "
    "constraints on how it must be answered.\n\n"
    "Constraint types, by group:\n{taxonomy}\n\n"
    "Main constraint type (must be used unless it contradicts the instruction): {main}.\n"
    "Also add {extra} more constraint(s), preferably of other types; new kinds beyond the list are welcome.\n"
    "The constraints must be consistent with each other and with the task, must not involve images or anything "
    "visual, and must be written into the instruction as prose, not as a list. Do not answer the instruction.\n"
    "If the instruction is a math or coding problem, the rewritten instruction is exactly: None\n\n"
    "Instruction: {seed}\n\n"
    "Write the rewritten instruction between " + EVOLVE_START + " and " + EVOLVE_END + "."
)


def _taxonomy_text() -> str:
    return "\n".join(f"- {group}: " + "; ".join(types) for group, types in TAXONOMY.items())


def evolve_requests(seeds: Sequence[str], *, seed: int = 0) -> list[tuple[list[dict[str, str]], str, int]]:
    """(messages, main constraint type, number of extra constraints asked) per seed instruction; the main type is
    drawn uniformly from the 14 types of ``TAXONOMY`` and the extra count from 1-3 (seeded, per seed index)."""
    out, taxonomy = [], _taxonomy_text()
    for i, s in enumerate(seeds):
        rng = random.Random(derive_seed(seed, "evolve", i))
        main, extra = rng.choice(CONSTRAINT_TYPES), rng.randint(1, 3)
        text = EVOLVE_TEMPLATE.format(taxonomy=taxonomy, main=main, extra=extra, seed=s.strip())
        out.append(([{"role": "user", "content": text}], main, extra))
    return out


def parse_evolved(text: str) -> str | None:
    """The rewritten instruction, or None when the model declined ("None"), returned nothing, or opened the
    ``[[start]]`` marker without closing it. Text outside the markers is ignored; without markers the whole output
    (minus a "Rewritten instruction:" label) is the instruction, as small models often omit them."""
    text = text.strip()
    if EVOLVE_START in text:
        begin = text.rfind(EVOLVE_START) + len(EVOLVE_START)
        end = text.find(EVOLVE_END, begin)
        if end < 0:
            return None
        text = text[begin:end].strip()
    if text.lower().startswith("rewritten instruction:"):
        text = text.split(":", 1)[1].strip()
    if not text or text.rstrip(".").strip().lower() == "none":
        return None
    return text


def evolve_instructions(
    engine,
    seeds: Sequence[str],
    *,
    seed: int = 0,
    max_new_tokens: int = 256,
    temperature: float = 0.7,
    top_p: float = 0.9,
) -> list[dict[str, Any]]:
    """Rewrite ``seeds`` with the model behind ``engine`` (any checkpoint the engine loads: the actor or a stronger
    model) in ONE batched call. Returns kept records {seed_index, seed, instruction, main_constraint,
    constraint_group, extra_constraints}: each keeps the type it was asked for, so prompts can later be split by
    type. Math/code seeds (model output "None") and unparseable outputs are dropped."""
    requests = evolve_requests(seeds, seed=seed)
    results = engine.generate(
        [messages for messages, _, _ in requests],
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        n=1,
        seed=derive_seed(seed, "evolve-call"),
    )
    out = []
    for i, ((_, main, extra), result) in enumerate(zip(requests, results)):
        instruction = parse_evolved(result.completions[0].text)
        if instruction is not None:
            out.append(
                {
                    "seed_index": i,
                    "seed": seeds[i],
                    "instruction": instruction,
                    "main_constraint": main,
                    "constraint_group": CONSTRAINT_GROUP[main],
                    "extra_constraints": extra,
                }
            )
    return out
