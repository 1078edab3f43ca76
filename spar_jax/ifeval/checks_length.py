"""IFEval checkers about length and structure: length_constraints:*,
combination:* and startend:*.

Every ``build_*`` function takes a :class:`KwargReader` for one instruction and
returns ``check(response: str) -> bool`` with the reference semantics.
"""

from __future__ import annotations

import re
from typing import Callable

from .params import KwargReader, compare
from .text import count_sentences, count_words

Check = Callable[[str], bool]

_DIVIDER = re.compile(r"\s?\*\*\*\s?")
_FIRST_WORD_STOP = frozenset(".,?!'\"")


def build_number_sentences(kw: KwargReader) -> Check:
    """length_constraints:number_sentences — Punkt (English) sentence count
    compared with ``num_sentences``."""
    n = kw.count("num_sentences")
    relation = kw.relation("relation")
    return lambda response: compare(count_sentences(response), relation, n)


def build_number_words(kw: KwargReader) -> Check:
    """length_constraints:number_words — ``\\w+`` run count compared with
    ``num_words``."""
    n = kw.count("num_words")
    relation = kw.relation("relation")
    return lambda response: compare(count_words(response), relation, n)


def count_divided_paragraphs(response: str) -> int | None:
    """Paragraphs separated by the markdown divider "***", or None when a
    paragraph between two dividers is blank (the reference then fails).
    A blank first or last piece (leading/trailing divider) is not counted."""
    pieces = _DIVIDER.split(response)
    count = len(pieces)
    for index, piece in enumerate(pieces):
        if not piece.strip():
            if index in (0, len(pieces) - 1):
                count -= 1
            else:
                return None
    return count


def build_number_paragraphs(kw: KwargReader) -> Check:
    """length_constraints:number_paragraphs — exactly ``num_paragraphs``
    "***"-separated paragraphs, none blank."""
    n = kw.count("num_paragraphs")
    return lambda response: count_divided_paragraphs(response) == n


def first_word(paragraph: str) -> str:
    """Lower-cased first whitespace token of a non-blank paragraph, after
    dropping leading quotes, cut at the first of . , ? ! ' \"."""
    word = paragraph.split()[0].strip().lstrip("'").lstrip('"')
    out = []
    for ch in word:
        if ch in _FIRST_WORD_STOP:
            break
        out.append(ch.lower())
    return "".join(out)


def build_nth_paragraph_first_word(kw: KwargReader) -> Check:
    """length_constraints:nth_paragraph_first_word — exactly ``num_paragraphs``
    non-blank "\\n\\n"-separated paragraphs and paragraph ``nth_paragraph``
    (1-based) starts with ``first_word`` (case-insensitive).

    Reference quirk kept: the count skips blank pieces but the nth piece is
    indexed in the unfiltered split, so a blank piece before it fails.
    """
    num = kw.count("num_paragraphs")
    nth = kw.count("nth_paragraph")
    if not 1 <= nth <= num:
        raise kw.error("nth_paragraph", f"must be between 1 and num_paragraphs={num}, got {nth}")
    word = kw.string("first_word", allow_empty=True).lower()

    def check(response: str) -> bool:
        pieces = response.split("\n\n")
        count = sum(1 for p in pieces if p.strip())
        if nth > count:
            return False
        paragraph = pieces[nth - 1].strip()
        if not paragraph:
            return False
        return count == num and first_word(paragraph) == word

    return check


def build_two_responses(kw: KwargReader) -> Check:
    """combination:two_responses — splitting on "******" leaves exactly two
    non-blank, different (after strip) parts; only the first and last piece
    may be blank."""

    def check(response: str) -> bool:
        pieces = response.split("******")
        valid = []
        for index, piece in enumerate(pieces):
            if piece.strip():
                valid.append(piece)
            elif index not in (0, len(pieces) - 1):
                return False
        return len(valid) == 2 and valid[0].strip() != valid[1].strip()

    return check


def build_repeat_prompt(kw: KwargReader) -> Check:
    """combination:repeat_prompt — the stripped response starts with the
    stripped ``prompt_to_repeat``, case-insensitively."""
    target = kw.string("prompt_to_repeat").strip().lower()
    return lambda response: response.strip().lower().startswith(target)


def build_end_checker(kw: KwargReader) -> Check:
    """startend:end_checker — the response, stripped of whitespace and then of
    double quotes, ends with ``end_phrase`` (stripped), case-insensitively."""
    phrase = kw.string("end_phrase").strip().lower()
    return lambda response: response.strip().strip('"').lower().endswith(phrase)


def build_quotation(kw: KwargReader) -> Check:
    """startend:quotation — the stripped response is at least two characters
    long and starts and ends with a double quote."""

    def check(response: str) -> bool:
        stripped = response.strip()
        return len(stripped) > 1 and stripped[0] == '"' and stripped[-1] == '"'

    return check
