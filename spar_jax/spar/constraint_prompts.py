"""The offline generator of verifiable constraint prompts (the "generated" prompt source of SPaR).

``generate_constraint_prompts`` composes a task (our own topic list) with one *main* constraint drawn uniformly and
1–3 more, mutually consistent, every one of them checkable by the IFEval rule checker (``instruction_id_list`` /
``kwargs`` in IFEval's schema), so held-out prompts can be scored without a judge model. The prompts are written by us
and disjoint from IFEval's own (tested). LLM instruction evolution is ``spar_jax.spar.instruction_evolution``.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any, Callable, Sequence

from spar_jax.judge.generation import derive_seed

TASKS = (
    "Describe how a lighthouse keeper might spend a stormy night",
    "Explain why bees are important for farming",
    "Give advice to someone starting to learn the violin",
    "Write a short story about a lost umbrella that finds its owner",
    "Describe a market in a mountain village at dawn",
    "Explain how a bicycle gear system works to a child",
    "Write a letter from a gardener to the first tomato of the season",
    "Summarize the benefits of taking short walks during the workday",
    "Describe the life cycle of a river from spring to sea",
    "Write a product description for a wooden chess set",
    "Explain what makes a good neighbor",
    "Write a short speech welcoming new members to a chess club",
    "Describe a train journey through a desert at night",
    "Give tips for keeping houseplants alive in winter",
    "Explain how people navigated at sea before satellites",
    "Write a diary entry of a cat watching the rain",
    "Describe the smell and sound of a bakery in the morning",
    "Explain the rules of a simple card game you invent",
    "Write a review of an imaginary museum of clocks",
    "Describe how to plan a picnic for a family of five",
    "Explain why the sky looks orange at sunset",
    "Write a motivational note for a student before an exam",
    "Describe an old library that only opens at midnight",
    "Explain how to make a paper boat",
    "Write a short fable about a tortoise who learns to share",
    "Describe a festival of lanterns on a lake",
    "Explain how recycling glass works",
    "Write an invitation to a neighborhood cleanup day",
    "Describe the view from the top of a windmill",
    "Give advice on writing a first poem",
    "Explain how a compass works",
    "Write a short dialogue between the moon and the tide",
)
# Task stems kept for out-of-distribution held-out prompts when prompts.heldout_types is set (never in training).
HELDOUT_TASKS = TASKS[-8:]
KEYWORDS = ("journey", "patience", "lantern", "harbor", "whisper", "meadow", "copper", "signal", "orchard", "compass")
END_PHRASES = ("that is all for today.", "thank you for reading.", "any other questions?", "until next time.")


@dataclasses.dataclass(frozen=True)
class Constraint:
    """One verifiable constraint: its IFEval id, the sentence added to the prompt, and the checker kwargs."""

    instruction_id: str
    text: str
    kwargs: dict[str, Any]


def _lowercase(rng):
    return Constraint(
        "change_case:english_lowercase",
        "Your entire response must be in lowercase letters; no capital letters are allowed.",
        {},
    )


def _capital(rng):
    return Constraint(
        "change_case:english_capital", "Write your entire response in English using only CAPITAL LETTERS.", {}
    )


def _no_comma(rng):
    return Constraint("punctuation:no_comma", "Do not use any commas in your response.", {})


def _keyword(rng):
    words = rng.sample(KEYWORDS, 2)
    return Constraint(
        "keywords:existence", f'Include the words "{words[0]}" and "{words[1]}" in your answer.', {"keywords": words}
    )


def _forbidden(rng):
    words = rng.sample(("very", "really", "basically", "actually", "simply"), 2)
    return Constraint(
        "keywords:forbidden_words", f'Avoid the words "{words[0]}" and "{words[1]}".', {"forbidden_words": words}
    )


def _word_count(rng):
    if rng.random() < 0.5:
        n = rng.choice((60, 80, 100))
        return Constraint(
            "length_constraints:number_words",
            f"Answer in fewer than {n} words.",
            {"relation": "less than", "num_words": n},
        )
    n = rng.choice((30, 50))
    return Constraint(
        "length_constraints:number_words", f"Use at least {n} words.", {"relation": "at least", "num_words": n}
    )


def _bullets(rng):
    n = rng.choice((2, 3, 4))
    return Constraint(
        "detectable_format:number_bullet_lists",
        f'Format your answer as exactly {n} markdown bullet points, each starting with "* ".',
        {"num_bullets": n},
    )


def _title(rng):
    return Constraint(
        "detectable_format:title",
        "Give your answer a title wrapped in double angular brackets, such as <<my title>>.",
        {},
    )


def _postscript(rng):
    return Constraint(
        "detectable_content:postscript",
        "At the end of your response, add a postscript starting with P.S.",
        {"postscript_marker": "P.S."},
    )


def _end_phrase(rng):
    phrase = rng.choice(END_PHRASES)
    return Constraint(
        "startend:end_checker",
        f'Finish your response with the exact phrase "{phrase}" and nothing after it.',
        {"end_phrase": phrase},
    )


def _quotation(rng):
    return Constraint("startend:quotation", "Wrap your entire response in double quotation marks.", {})


def _placeholders(rng):
    n = rng.choice((1, 2))
    return Constraint(
        "detectable_content:number_placeholders",
        f"Include at least {n} placeholder(s) in square brackets, such as [name].",
        {"num_placeholders": n},
    )


def _sentences(rng):
    n = rng.choice((3, 4, 5))
    return Constraint(
        "length_constraints:number_sentences",
        f"Use fewer than {n + 1} sentences.",
        {"relation": "less than", "num_sentences": n + 1},
    )


MAKERS: dict[str, Callable[[random.Random], Constraint]] = {
    "change_case:english_lowercase": _lowercase,
    "change_case:english_capital": _capital,
    "punctuation:no_comma": _no_comma,
    "keywords:existence": _keyword,
    "keywords:forbidden_words": _forbidden,
    "length_constraints:number_words": _word_count,
    "detectable_format:number_bullet_lists": _bullets,
    "detectable_format:title": _title,
    "detectable_content:postscript": _postscript,
    "startend:end_checker": _end_phrase,
    "startend:quotation": _quotation,
    "detectable_content:number_placeholders": _placeholders,
    "length_constraints:number_sentences": _sentences,
}
# Pairs that cannot both hold (or make the other unverifiable): never drawn together.
CONFLICTS = {
    frozenset({"change_case:english_lowercase", "change_case:english_capital"}),
    frozenset({"change_case:english_capital", "keywords:existence"}),  # keywords are given in lowercase
    frozenset({"change_case:english_capital", "startend:end_checker"}),
    frozenset({"change_case:english_capital", "detectable_content:postscript"}),
    frozenset({"change_case:english_lowercase", "detectable_content:postscript"}),
    frozenset({"startend:quotation", "startend:end_checker"}),
    frozenset({"startend:quotation", "detectable_content:postscript"}),
    frozenset({"startend:quotation", "detectable_format:title"}),
    frozenset({"detectable_format:number_bullet_lists", "length_constraints:number_sentences"}),
}


def _compatible(chosen: Sequence[str], candidate: str) -> bool:
    return candidate not in chosen and all(frozenset({c, candidate}) not in CONFLICTS for c in chosen)


def parse_constraint_types(text: str) -> tuple[str, ...]:
    """A comma-separated list of IFEval ids ("" = none given) -> the ids; raises ValueError for ids we cannot make."""
    ids = tuple(t.strip() for t in text.split(",") if t.strip())
    unknown = sorted(set(ids) - set(MAKERS))
    if unknown:
        raise ValueError(f"has types the generator cannot make: {unknown}; choose from {', '.join(sorted(MAKERS))}")
    return ids


def generate_constraint_prompts(
    n: int,
    *,
    seed: int = 0,
    tasks: Sequence[str] = TASKS,
    instruction_ids: Sequence[str] = (),
    max_constraints: int = 4,
    main_ids: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """``n`` prompts in IFEval's schema: {key, prompt, instruction_id_list, kwargs}. Deterministic in ``seed``.

    Each prompt has a main constraint drawn from ``main_ids`` (default: ``instruction_ids``) and 1-3 more (at most
    ``max_constraints`` in all) drawn from ``instruction_ids`` (default: every type we generate, ``sorted(MAKERS)``).
    Out-of-distribution held-out prompts pass the reserved types as ``main_ids``."""
    unknown = sorted((set(instruction_ids) | set(main_ids)) - set(MAKERS))
    if unknown:
        raise ValueError(f"constraint types {unknown} cannot be generated; choose from {sorted(MAKERS)}")
    if max_constraints < 1:
        raise ValueError(f"max_constraints must be >= 1, got {max_constraints}")
    ids = sorted(instruction_ids or MAKERS)
    mains = sorted(main_ids) if main_ids else ids
    out = []
    for i in range(n):
        rng = random.Random(derive_seed(seed, "constraint-prompt", i))
        main = rng.choice(mains)  # the main constraint, uniform over types
        chosen = [main]
        for _ in range(min(rng.randint(1, 3), max_constraints - 1)):
            options = [c for c in ids if _compatible(chosen, c)]
            if options:
                chosen.append(rng.choice(options))
        constraints = [MAKERS[c](rng) for c in chosen]
        task = tasks[rng.randrange(len(tasks))]
        prompt = task + ". " + " ".join(c.text for c in constraints)
        out.append(
            {
                "key": i,
                "prompt": prompt,
                "instruction_id_list": [c.instruction_id for c in constraints],
                "kwargs": [dict(c.kwargs) for c in constraints],
            }
        )
    return out
