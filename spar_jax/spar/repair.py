"""Rule-based repair of answers: rewrite a response so that it passes the IFEval checks of every constraint type that
`constraint_prompts.MAKERS` draws (Stage-0 refinement targets without a strong model).

`fix_response` parses the response into parts (title line, body blocks of sentences, postscript, closing sentence,
outer quotes), edits the parts, renders them back, fits the length with the added text protected, and finally
VERIFIES the result with the IFEval checker: it returns None unless every instruction passes strictly.

Edit order, chosen so that no step undoes an earlier one:
1. the closing sentence (end phrase) is set aside; bullets (restructure the body into exactly n "* " items);
2. missing keywords / placeholders are added as one protected sentence each (a clause of the last sentence when
   the sentence count is capped, so they add no sentence);
3. length (drop or cut body sentences / pad with neutral text), measured on the fully rendered text;
4. steps 2–3 repeat if truncation removed a keyword or placeholder;
5. at render time: title first, postscript after the body, the end phrase last; then forbidden words and commas
   are deleted, the case is changed, and the quotes wrap everything — the character-level rules run last so no
   added text can reintroduce a capital, comma or forbidden word.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping, Sequence

from spar_jax import ifeval
from spar_jax.ifeval.text import count_sentences, count_words, split_sentences
from spar_jax.spar.constraint_prompts import MAKERS

SUPPORTED_IDS: tuple[str, ...] = tuple(sorted(MAKERS))

# Neutral padding: no commas, no capitals beyond the first letter, none of evolve's forbidden words.
FILLER_SENTENCES = (
    "Each small step adds up over time.",
    "It helps to take things one step at a time.",
    "A little planning makes the whole thing easier.",
    "The main idea is clear and worth remembering.",
    "Anyone can try this with a bit of care.",
    "Good habits make the result last longer.",
    "Small details often make the biggest difference.",
    "It is worth coming back to this idea now and then.",
)
FILLER_CLAUSES = (
    "and each small step adds up over time",
    "so it helps to take things one step at a time",
    "while a little planning makes the whole thing easier",
    "because small details often make the biggest difference",
    "and good habits make the result last longer",
    "so anyone can try this with a bit of care",
)
PLACEHOLDER_NAMES = ("name", "date", "place", "time", "address", "signature")
DEFAULT_POSTSCRIPT = "I hope this helps."

_TITLE_LINE = re.compile(r"^\s*<<([^\n]*)>>\s*$")
_ANY_TITLE = re.compile(r"<<[^\n]+>>")
_PS_LINE = re.compile(r"^\s*p\.\s?(?:p\.\s?)?s\.?(?=\s|$)\s*", re.IGNORECASE)
_LIST_MARK = re.compile(r"^\s*(?:[*\-•+]|\d+[.)])\s+")
_HEADING = re.compile(r"^\s*(?:#{1,6}\s+\S.*|\*\*[^*\n]+\*\*:?)\s*$")
_PLACEHOLDER = re.compile(r"\[.*?\]")
_WORD = re.compile(r"\w+")
_TITLE_STOP = frozenset(
    "a an the and or but of for to in on at by with is are was were be it its this that i you your my we our".split()
)
_TITLE_LEAD = frozenset("let me sure here is are i i'll will okay ok well so certainly of course".split())
_MIN_CUT_WORDS = 3  # a sentence is never cut below this many words


@dataclasses.dataclass
class _Block:
    marker: str  # "" for a paragraph, else the list marker with its trailing space, e.g. "* "
    sentences: list[str]
    heading: bool = False  # a markdown heading line ("## ...", "**...**"): kept out of regrouped bullets


@dataclasses.dataclass
class _Draft:
    title: str | None = None
    blocks: list[_Block] = dataclasses.field(default_factory=list)
    ps: str | None = None  # postscript text after its marker
    closing: str | None = None  # the sentence rendered last (holds the end phrase)
    quote: bool = False
    keywords: list[str] = dataclasses.field(default_factory=list)  # added in a protected sentence
    placeholders: list[str] = dataclasses.field(default_factory=list)  # names added in a protected sentence
    pads: int = 0  # filler sentences / clauses added so far


@dataclasses.dataclass(frozen=True)
class _Rules:
    case: str | None = None  # "lower" | "upper"
    no_comma: bool = False
    forbidden: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    placeholders: int = 0
    bullets: int | None = None
    words: tuple[str, int] | None = None  # (relation, n)
    sentences: tuple[str, int] | None = None
    title: bool = False
    ps_marker: str | None = None
    end_phrase: str | None = None
    quote: bool = False

    @property
    def clause_mode(self) -> bool:
        """Added text goes into the last sentence when the sentence count is capped."""
        return self.sentences is not None and self.sentences[0] == "less than"


_RULE_OF = {  # instruction id -> (kwargs, fields so far) -> fields to set
    "change_case:english_lowercase": lambda kw, f: {"case": "lower"},
    "change_case:english_capital": lambda kw, f: {"case": "upper"},
    "punctuation:no_comma": lambda kw, f: {"no_comma": True},
    "keywords:existence": lambda kw, f: {"keywords": f.get("keywords", ()) + tuple(kw["keywords"])},
    "keywords:forbidden_words": lambda kw, f: {"forbidden": f.get("forbidden", ()) + tuple(kw["forbidden_words"])},
    "length_constraints:number_words": lambda kw, f: {"words": (kw["relation"], int(kw["num_words"]))},
    "length_constraints:number_sentences": lambda kw, f: {"sentences": (kw["relation"], int(kw["num_sentences"]))},
    "detectable_format:number_bullet_lists": lambda kw, f: {"bullets": int(kw["num_bullets"])},
    "detectable_format:title": lambda kw, f: {"title": True},
    "detectable_content:postscript": lambda kw, f: {"ps_marker": kw["postscript_marker"].strip()},
    "startend:end_checker": lambda kw, f: {"end_phrase": kw["end_phrase"].strip()},
    "startend:quotation": lambda kw, f: {"quote": True},
    "detectable_content:number_placeholders": lambda kw, f: {
        "placeholders": max(f.get("placeholders", 0), int(kw["num_placeholders"]))},
}  # fmt: skip


def _rules(ids: Sequence[str], kwargs: Sequence[Mapping[str, Any] | None]) -> _Rules:
    fields: dict[str, Any] = {}
    for iid, kw in zip(ids, kwargs):
        if iid not in _RULE_OF:
            raise ValueError(f"fix_response: unsupported instruction id {iid!r}; supported: {', '.join(SUPPORTED_IDS)}")
        fields.update(_RULE_OF[iid]({k: v for k, v in (kw or {}).items() if v is not None}, fields))
    return _Rules(**fields)


# ---------------------------------------------------------------- parse and render


def _parse(response: str) -> _Draft:
    d = _Draft()
    text = response.strip()
    if len(text) > 1 and text[0] == '"' and text[-1] == '"':
        d.quote, text = True, text[1:-1].strip()
    lines = text.split("\n")
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is not None:
        m = _TITLE_LINE.match(lines[first])
        if m and m.group(1).strip():
            d.title = m.group(1).strip()
            del lines[first]
    for i, line in enumerate(lines):
        m = _PS_LINE.match(line)
        if m:
            d.ps = " ".join([line[m.end() :].strip(), *(x.strip() for x in lines[i + 1 :])]).strip()
            lines = lines[:i]
            break
    paragraph: list[str] = []

    def flush():
        if paragraph:
            d.blocks.append(_Block("", split_sentences(" ".join(paragraph))))
            paragraph.clear()

    for line in lines:
        m = _LIST_MARK.match(line)
        if not line.strip():
            flush()
        elif _HEADING.match(line):
            flush()
            d.blocks.append(_Block("", [line.strip()], heading=True))
        elif m:
            flush()
            d.blocks.append(_Block(m.group(0).strip() + " ", split_sentences(line[m.end() :].strip())))
        else:
            paragraph.append(line.strip())
    flush()
    d.blocks = [b for b in d.blocks if b.sentences]
    return d


def _join_clause(sentence: str, clause: str) -> str:
    """'He left.' + 'and it rained' -> 'He left and it rained.' (closing quotes stay with the sentence)."""
    m = re.match(r"(.*?)([.!?]*)([\"')\]]*)\s*$", sentence, re.DOTALL)
    core, punct, closers = m.group(1).rstrip(), m.group(2), m.group(3)
    return f"{core}{closers} {clause}{punct[-1:] or '.'}"


def _body(d: _Draft, r: _Rules) -> str:
    blocks = [_Block(b.marker, list(b.sentences)) for b in d.blocks]
    for sentence, clause in _extras(d):
        if not blocks:
            blocks.append(_Block("", []))
        last = blocks[-1].sentences
        if r.clause_mode and last:
            last[-1] = _join_clause(last[-1], clause)
        else:
            last.append(sentence)
    out, prev_list = "", False
    for b in blocks:
        text = " ".join(s.strip() for s in b.sentences if s.strip())
        if not text:
            continue
        if out:
            out += "\n" if (b.marker and prev_list) else "\n\n"
        out += b.marker + text
        prev_list = bool(b.marker)
    return out


def _delete_words(text: str, words: Sequence[str]) -> str:
    """Whole-word, case-insensitive deletion with the space before (and a comma after) each hit."""
    alternation = "|".join(re.escape(w) for w in words)
    text = re.sub(r"[ \t]*\b(?:" + alternation + r")\b,?", "", text, flags=re.IGNORECASE)
    text = re.sub(r"(?m)^[ \t]+", "", text)
    return re.sub(r"[ \t]+([.!?,;:])", r"\1", text)


def _render(d: _Draft, r: _Rules) -> str:
    ps = None if d.ps is None else f"{r.ps_marker or 'P.S.'} {d.ps}".rstrip()
    title = None if d.title is None else f"<<{d.title}>>"
    text = "\n\n".join(p for p in (title, _body(d, r), ps) if p)
    if d.closing:
        after_list = d.ps is None and bool(d.blocks) and bool(d.blocks[-1].marker)
        text = (text + ("\n\n" if after_list else " ") + d.closing) if text else d.closing
    if r.forbidden:
        text = _delete_words(text, r.forbidden)
    if r.no_comma:
        text = text.replace(", ", " ").replace(",", "")
    text = {"lower": str.lower, "upper": str.upper}.get(r.case or "", str)(text)
    if d.quote:
        head = "\n" if re.match(r"\s*[*\-]", text) else ""
        text = '"' + head + text + '"'
    return text


# ---------------------------------------------------------------- edits


def _make_bullets(d: _Draft, n: int) -> None:
    """Exactly n "* " blocks: existing list items if there are n of them, else all sentences regrouped."""
    items = [b for b in d.blocks if b.marker]
    if len(items) == n:
        for b in items:
            b.marker = "* "
        return
    sentences = [s for b in d.blocks if not b.heading for s in b.sentences]
    while len(sentences) < n and _split_one(sentences):
        pass
    fillers = iter(f for f in FILLER_SENTENCES if f not in sentences)
    while len(sentences) < n:
        sentences.append(next(fillers))
    k, groups, start = len(sentences), [], 0
    for i in range(n):
        size = k // n + (1 if i < k % n else 0)
        groups.append(sentences[start : start + size])
        start += size
    d.blocks = [_Block("* ", g) for g in groups]


def _split_one(sentences: list[str]) -> bool:
    """Split one sentence at a clause boundary (both halves >= 4 words), best separator first, longest sentence
    first, in place; False if no sentence can be split."""
    order = sorted(range(len(sentences)), key=lambda j: -len(sentences[j]))
    for sep in ("; ", ", and ", ", but ", ", so ", ", "):
        for i in order:
            s = sentences[i]
            pos = s.find(sep)
            while pos >= 0:
                head, tail = s[:pos].rstrip(), s[pos + len(sep) :].strip()
                if len(_WORD.findall(head)) >= 4 and len(_WORD.findall(tail)) >= 4:
                    sentences[i : i + 1] = [head + ".", tail[0].upper() + tail[1:]]
                    return True
                pos = s.find(sep, pos + 1)
    return False


def _strip_closing(d: _Draft, phrase: str) -> None:
    """Move a final sentence ending with the end phrase into `closing`; else the closing is the phrase itself."""
    low = phrase.lower()
    if d.ps is not None:
        sentences = split_sentences(d.ps)
        if sentences and sentences[-1].strip().strip('"').lower().endswith(low):
            d.closing, d.ps = sentences[-1].strip(), " ".join(sentences[:-1])
            return
    elif d.blocks and d.blocks[-1].sentences[-1].strip().strip('"').lower().endswith(low):
        d.closing = d.blocks[-1].sentences.pop().strip()
        if not d.blocks[-1].sentences:
            d.blocks.pop()
        return
    d.closing = phrase


def _listing(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _extras(d: _Draft) -> list[tuple[str, str]]:
    """The protected additions as (sentence, clause) pairs."""
    out = []
    if d.keywords:
        listed, one = _listing(d.keywords), len(d.keywords) == 1
        out.append(
            (
                f"{'A word' if one else 'Words'} to keep in mind here {'is' if one else 'are'} {listed}.",
                f"with {listed} in mind",
            )
        )
    if d.placeholders:
        listed = _listing([f"[{n}]" for n in d.placeholders])
        out.append((f"Fill in {listed} as needed.", f"with {listed} filled in"))
    return out


def _add_extras(d: _Draft, r: _Rules) -> None:
    """Add keywords missing from the rendered text, and enough placeholders, to the protected additions."""
    text = _render(d, r)
    d.keywords += [k for k in dict.fromkeys(r.keywords) if not re.search(k, text, re.IGNORECASE)]
    need = r.placeholders - len(_PLACEHOLDER.findall(text))
    if need > 0:
        free = [n for n in PLACEHOLDER_NAMES if f"[{n}]" not in text.lower()]
        d.placeholders += free[:need]


def _drop_sentence(d: _Draft, r: _Rules) -> bool:
    """Remove one sentence, least important first; False if nothing can go."""
    if d.ps and r.ps_marker is None:
        d.ps = None
        return True
    total = sum(len(b.sentences) for b in d.blocks)
    for i in range(len(d.blocks) - 1, -1, -1):
        b = d.blocks[i]
        keep_block = r.bullets is not None and b.marker == "* "
        if total > 1 and (len(b.sentences) > 1 or not keep_block):
            b.sentences.pop()
            if not b.sentences:
                del d.blocks[i]
            return True
    if d.ps and len(split_sentences(d.ps)) > 1:
        d.ps = split_sentences(d.ps)[0]
        return True
    if d.ps and d.closing:  # "P.S." then the closing sentence still makes a postscript
        d.ps = ""
        return True
    return False


def _cut_words(d: _Draft, excess: int) -> bool:
    """Cut the longest body sentence at a word boundary by `excess` words (keeping >= 3); False if none can be."""
    cands = [(len(_WORD.findall(s)), bi, si) for bi, b in enumerate(d.blocks) for si, s in enumerate(b.sentences)]
    n, bi, si = max(cands, default=(0, 0, 0))
    keep = max(_MIN_CUT_WORDS, n - excess)
    if keep >= n:
        return False
    s = d.blocks[bi].sentences[si]
    head = s[: list(_WORD.finditer(s))[keep - 1].end()].rstrip(" ,;:-")
    d.blocks[bi].sentences[si] = head + "."
    return True


def _pad(d: _Draft, r: _Rules) -> None:
    """Lengthen by one neutral sentence, or by one clause of the last sentence when sentences are capped."""
    if not d.blocks:
        d.blocks.append(_Block("", []))
    step, d.pads = d.pads, d.pads + 1
    if r.clause_mode and d.blocks[-1].sentences:
        target = d.blocks[-1].sentences
        target[-1] = _join_clause(target[-1], FILLER_CLAUSES[step % len(FILLER_CLAUSES)])
        return
    block = min(d.blocks, key=lambda b: len(" ".join(b.sentences))) if r.bullets else d.blocks[-1]
    block.sentences.append(FILLER_SENTENCES[step % len(FILLER_SENTENCES)])


def _fit_length(d: _Draft, r: _Rules, max_steps: int = 300) -> bool:
    for _ in range(max_steps):
        text = _render(d, r)
        if r.sentences:
            relation, n = r.sentences
            count = count_sentences(text)
            if relation == "less than" and count >= n:
                if not _drop_sentence(d, r):
                    return False
                continue
            if relation == "at least" and count < n:
                d.blocks.append(_Block("", [FILLER_SENTENCES[d.pads % len(FILLER_SENTENCES)]]))
                d.pads += 1
                continue
        if r.words:
            relation, n = r.words
            count = count_words(text)
            if relation == "less than" and count >= n:
                if not (_drop_sentence(d, r) or _cut_words(d, count - n + 1)):
                    return False
                continue
            if relation == "at least" and count < n:
                _pad(d, r)
                continue
        return True
    return False


def _make_title(d: _Draft, r: _Rules) -> str:
    first = next((s for b in d.blocks for s in b.sentences), "")  # a heading if the body starts with one
    banned = {w.lower() for w in r.forbidden}
    words = [w for w in re.findall(r"[A-Za-z']+", first) if w.lower() not in banned]
    while words and words[0].lower() in _TITLE_LEAD:
        words.pop(0)
    words = words[:5]
    while words and words[-1].lower() in _TITLE_STOP:
        words.pop()
    return " ".join(w[0].upper() + w[1:] for w in words) or "A Short Answer"


def fix_response(
    response: str, instruction_id_list: Sequence[str], kwargs: Sequence[Mapping[str, Any] | None]
) -> str | None:
    """`response` rewritten by rule to satisfy every instruction, or None when the checker does not pass the
    result strictly. A response that already passes is returned unchanged.

    Supports the ids in `SUPPORTED_IDS` (those of `constraint_prompts.MAKERS`); any other id raises ValueError, as do
    bad kwargs (the checker's message names the id and key). Deterministic: depends only on the arguments.
    """
    if not isinstance(response, str):
        raise ValueError(f"fix_response: response must be a string, got {type(response).__name__}")
    strict, _ = ifeval.check(instruction_id_list, kwargs, "", response)  # validates ids and kwargs
    r = _rules(instruction_id_list, kwargs)
    if all(strict):
        return response
    d = _parse(response)
    d.quote = d.quote or r.quote
    if r.end_phrase:
        _strip_closing(d, r.end_phrase)  # before bullets: the closing sentence must not become a bullet
    if r.bullets is not None:
        _make_bullets(d, r.bullets)
    if (
        r.title
        and d.title is None
        and not any(t.strip("<>").strip() for t in _ANY_TITLE.findall(_body(d, r) + "\n" + (d.ps or "")))
    ):
        d.title = _make_title(d, r)
    if r.ps_marker is not None and d.ps is None:
        d.ps = DEFAULT_POSTSCRIPT
    for _ in range(3):
        _add_extras(d, r)
        if not _fit_length(d, r):
            return None
        text = _render(d, r)
        if all(ifeval.check(instruction_id_list, kwargs, "", text)[0]):
            return text
    return None
