"""IFEval checkers about layout: detectable_format:* and detectable_content:*.

Every ``build_*`` function takes a :class:`KwargReader` for one instruction and
returns ``check(response: str) -> bool`` with the reference semantics.
"""

from __future__ import annotations

import json
import re
from typing import Callable

from .params import KwargReader

Check = Callable[[str], bool]

_PLACEHOLDER = re.compile(r"\[.*?\]")
_STAR_BULLET = re.compile(r"^\s*\*[^\*].*$", re.MULTILINE)
_DASH_BULLET = re.compile(r"^\s*-.*$", re.MULTILINE)
_HIGHLIGHT = re.compile(r"\*[^\n\*]*\*")
_DOUBLE_HIGHLIGHT = re.compile(r"\*\*[^\n\*]*\*\*")
_TITLE = re.compile(r"<<[^\n]+>>")
CONSTRAINED_RESPONSE_OPTIONS = ("My answer is yes.", "My answer is no.", "My answer is maybe.")


def build_number_placeholders(kw: KwargReader) -> Check:
    """detectable_content:number_placeholders — at least ``num_placeholders``
    non-greedy ``[...]`` spans."""
    n = kw.count("num_placeholders")
    return lambda response: len(_PLACEHOLDER.findall(response)) >= n


def build_postscript(kw: KwargReader) -> Check:
    """detectable_content:postscript — the lower-cased response contains the
    marker anywhere. "P.S." and "P.P.S" allow one optional space after each dot;
    any other marker is used as a raw (lower-cased) regex."""
    marker = kw.string("postscript_marker").strip()
    if marker == "P.P.S":
        source = r"\s*p\.\s?p\.\s?s.*$"
    elif marker == "P.S.":
        source = r"\s*p\.\s?s\..*$"
    else:
        source = r"\s*" + marker.lower() + r".*$"
    pattern = kw.pattern("postscript_marker", source, re.MULTILINE)
    return lambda response: pattern.search(response.lower()) is not None


def build_number_bullet_lists(kw: KwargReader) -> Check:
    """detectable_format:number_bullet_lists — exactly ``num_bullets`` lines that
    start (after whitespace) with "*" not followed by "*", or with "-"."""
    n = kw.count("num_bullets")

    def check(response: str) -> bool:
        found = len(_STAR_BULLET.findall(response)) + len(_DASH_BULLET.findall(response))
        return found == n

    return check


def build_constrained_response(kw: KwargReader) -> Check:
    """detectable_format:constrained_response — contains "My answer is yes.",
    "My answer is no." or "My answer is maybe." (case-sensitive)."""
    return lambda response: any(o in response.strip() for o in CONSTRAINED_RESPONSE_OPTIONS)


def count_highlights(response: str) -> int:
    """Non-blank ``*x*`` spans plus non-blank ``**x**`` spans (one line each).

    Reference quirk kept: "**bold**" matches neither as one ``*x*`` span with
    content, but counts once as a double highlight.
    """
    single = sum(1 for h in _HIGHLIGHT.findall(response) if h.strip("*").strip())
    double = sum(1 for h in _DOUBLE_HIGHLIGHT.findall(response) if h.removeprefix("**").removesuffix("**").strip())
    return single + double


def build_number_highlighted_sections(kw: KwargReader) -> Check:
    """detectable_format:number_highlighted_sections — at least ``num_highlights``
    highlights as counted by :func:`count_highlights`."""
    n = kw.count("num_highlights")
    return lambda response: count_highlights(response) >= n


def build_multiple_sections(kw: KwargReader) -> Check:
    """detectable_format:multiple_sections — splitting on
    ``\\s?<spliter>\\s?\\d+\\s?`` (case-sensitive, anywhere) gives at least
    ``num_sections`` + 1 pieces."""
    spliter = kw.string("section_spliter").strip()
    pattern = kw.pattern("section_spliter", r"\s?" + spliter + r"\s?\d+\s?")
    n = kw.count("num_sections")
    return lambda response: len(pattern.split(response)) - 1 >= n


def strip_json_fence(response: str) -> str:
    """The response without surrounding whitespace and one markdown code fence."""
    return (
        response.strip()
        .removeprefix("```json")
        .removeprefix("```Json")
        .removeprefix("```JSON")
        .removeprefix("```")
        .removesuffix("```")
        .strip()
    )


def build_json_format(kw: KwargReader) -> Check:
    """detectable_format:json_format — ``json.loads`` accepts the response once
    whitespace and a surrounding ```` ```json ```` fence are removed."""

    def check(response: str) -> bool:
        try:
            json.loads(strip_json_fence(response))
        except ValueError:
            return False
        return True

    return check


def build_title(kw: KwargReader) -> Check:
    """detectable_format:title — some ``<<...>>`` on one line with non-blank text."""

    def check(response: str) -> bool:
        return any(t.lstrip("<").rstrip(">").strip() for t in _TITLE.findall(response))

    return check
