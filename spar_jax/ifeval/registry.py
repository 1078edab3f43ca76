"""The 25 IFEval instruction types and how to build a checker for one."""

from __future__ import annotations

from typing import Any, Callable, Mapping

from . import checks_format as fmt
from . import checks_length as length
from . import checks_words as words
from .params import KwargReader

Check = Callable[[str], bool]

BUILDERS: Mapping[str, Callable[[KwargReader], Check]] = {
    "keywords:existence": words.build_keyword_existence,
    "keywords:frequency": words.build_keyword_frequency,
    "keywords:forbidden_words": words.build_forbidden_words,
    "keywords:letter_frequency": words.build_letter_frequency,
    "language:response_language": words.build_response_language,
    "length_constraints:number_sentences": length.build_number_sentences,
    "length_constraints:number_paragraphs": length.build_number_paragraphs,
    "length_constraints:number_words": length.build_number_words,
    "length_constraints:nth_paragraph_first_word": length.build_nth_paragraph_first_word,
    "detectable_content:number_placeholders": fmt.build_number_placeholders,
    "detectable_content:postscript": fmt.build_postscript,
    "detectable_format:number_bullet_lists": fmt.build_number_bullet_lists,
    "detectable_format:constrained_response": fmt.build_constrained_response,
    "detectable_format:number_highlighted_sections": fmt.build_number_highlighted_sections,
    "detectable_format:multiple_sections": fmt.build_multiple_sections,
    "detectable_format:json_format": fmt.build_json_format,
    "detectable_format:title": fmt.build_title,
    "combination:two_responses": length.build_two_responses,
    "combination:repeat_prompt": length.build_repeat_prompt,
    "startend:end_checker": length.build_end_checker,
    "change_case:capital_word_frequency": words.build_capital_word_frequency,
    "change_case:english_capital": words.build_english_capital,
    "change_case:english_lowercase": words.build_english_lowercase,
    "punctuation:no_comma": words.build_no_comma,
    "startend:quotation": length.build_quotation,
}

INSTRUCTION_IDS: tuple[str, ...] = tuple(sorted(BUILDERS))


def build_checker(instruction_id: str, kwargs: Mapping[str, Any] | None) -> Check:
    """``check(response) -> bool`` for one instruction, its kwargs validated.

    ``None``-valued kwargs are ignored (Hugging Face layout). Raises ValueError
    naming the id for an unknown instruction, and the id and key for a missing,
    ill-typed, out-of-range or unexpected kwarg.
    """
    builder = BUILDERS.get(instruction_id) if isinstance(instruction_id, str) else None
    if builder is None:
        raise ValueError(f"unknown IFEval instruction id {instruction_id!r}; known ids: {', '.join(INSTRUCTION_IDS)}")
    reader = KwargReader(instruction_id, kwargs)
    check = builder(reader)
    reader.check_no_extra()
    return check
