"""IFEval checkers about words and letters: keywords, language, case, commas.

Every ``build_*`` function takes a :class:`KwargReader` for one instruction and
returns ``check(response: str) -> bool`` with the reference semantics.
"""

from __future__ import annotations

import random
import re
import string
from typing import Callable

from .params import KwargReader, compare
from .text import LANGUAGE_CODES, detect_language, word_tokenize

Check = Callable[[str], bool]
_ASCII_LOWER = frozenset(string.ascii_lowercase)


def build_keyword_existence(kw: KwargReader) -> Check:
    """keywords:existence — every keyword occurs, case-insensitively.

    Reference quirk kept: a keyword is a raw regex searched anywhere (no word
    boundaries), so "cat" is found in "concatenate".
    """
    patterns = [kw.pattern("keywords", k, re.IGNORECASE) for k in sorted(kw.string_list("keywords"))]
    return lambda response: all(p.search(response) for p in patterns)


def build_keyword_frequency(kw: KwargReader) -> Check:
    """keywords:frequency — case-insensitive non-overlapping regex matches of
    ``keyword`` (stripped; no word boundaries) compared with ``frequency``."""
    keyword = kw.string("keyword").strip()
    pattern = kw.pattern("keyword", keyword, re.IGNORECASE)
    frequency = kw.count("frequency")
    relation = kw.relation("relation")
    return lambda response: compare(len(pattern.findall(response)), relation, frequency)


def build_forbidden_words(kw: KwargReader) -> Check:
    """keywords:forbidden_words — none of the words occurs as a whole word
    (``\\bword\\b``, case-insensitive)."""
    words = sorted(set(kw.string_list("forbidden_words")))
    patterns = [kw.pattern("forbidden_words", r"\b" + w + r"\b", re.IGNORECASE) for w in words]
    return lambda response: not any(p.search(response) for p in patterns)


def substitute_letter(letter: str) -> str:
    """The letter the reference counts for a ``letter`` kwarg it rejects.

    The reference replaces anything that is not one ASCII letter (e.g. "#" or
    "!") with ``random.choice(string.ascii_letters)``. We keep that quirk but
    draw from a generator seeded with the rejected value, so scores repeat.
    """
    return random.Random(f"ifeval-letter:{letter}").choice(string.ascii_letters).lower()


def build_letter_frequency(kw: KwargReader) -> Check:
    """keywords:letter_frequency — occurrences of ``letter`` in the lower-cased
    response compared with ``let_frequency``."""
    letter = kw.string("letter", allow_empty=True)
    if len(letter) != 1 or letter.lower() not in _ASCII_LOWER:
        letter = substitute_letter(letter)
    letter = letter.lower()
    frequency = kw.count("let_frequency")
    relation = kw.relation("let_relation")
    return lambda response: compare(response.lower().count(letter), relation, frequency)


def build_response_language(kw: KwargReader) -> Check:
    """language:response_language — langdetect's code equals ``language``;
    undetectable text counts as followed (reference behaviour)."""
    language = kw.string("language")
    if language not in LANGUAGE_CODES:
        raise kw.error("language", f"must be one of {sorted(LANGUAGE_CODES)}, got {language!r}")

    def check(response: str) -> bool:
        detected = detect_language(response)
        return detected is None or detected == language

    return check


def build_capital_word_frequency(kw: KwargReader) -> Check:
    """change_case:capital_word_frequency — number of NLTK word tokens with
    ``str.isupper()`` compared with ``capital_frequency``."""
    frequency = kw.count("capital_frequency")
    relation = kw.relation("capital_relation")

    def check(response: str) -> bool:
        capital = sum(1 for token in word_tokenize(response) if token.isupper())
        return compare(capital, relation, frequency)

    return check


def _english_in_case(case_test: Callable[[str], bool]) -> Callable[[KwargReader], Check]:
    def build(kw: KwargReader) -> Check:
        def check(response: str) -> bool:
            if not case_test(response):
                return False
            detected = detect_language(response)
            return detected is None or detected == "en"

        return check

    return build


build_english_capital = _english_in_case(str.isupper)
build_english_capital.__doc__ = (
    "change_case:english_capital — ``str.isupper()`` and langdetect says English (undetectable counts as English)."
)
build_english_lowercase = _english_in_case(str.islower)
build_english_lowercase.__doc__ = (
    "change_case:english_lowercase — ``str.islower()`` and langdetect says English (undetectable counts as English)."
)


def build_no_comma(kw: KwargReader) -> Check:
    """punctuation:no_comma — no ASCII comma anywhere."""
    return lambda response: "," not in response
