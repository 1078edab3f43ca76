"""Stage 0 offline: initial SFT data for the refiner and the actor from the IFEval rule checker, no strong model.

For generated constraint prompts (`constraint_prompts.generate_constraint_prompts`, IFEval schema) every requirement is
checkable, so the checker plays the strong model's part:
- judgment targets: a step-by-step verification, one line per requirement, ending "Final Judgement: Yes|No";
- refinement targets: a short reflection, then the rule-fixed response (`repair.fix_response`, verified) between
  [[start]] / [[end]];
- actor targets: the fixed (or already passing) response to the bare instruction.
Targets are written in our own words and follow the protocol of `prompts.py`, so `parse_judgement` and
`parse_refinement` read every one of them back (checked here and in the tests).

Only the constraints are judged: the task part of a prompt ("Describe ...") is not verifiable by rule.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from typing import Any, Mapping, Sequence

from spar_jax import ifeval
from spar_jax.ifeval.text import count_sentences, count_words
from spar_jax.judge.generation import derive_seed
from spar_jax.judge.templates import (
    DEFAULT_TEMPLATES,
    END_MARKER,
    START_MARKER,
    Templates,
    actor_messages,
    judge_messages,
    parse_judgement,
    parse_refinement,
    refine_messages,
)  # fmt: skip
from spar_jax.spar.repair import SUPPORTED_IDS, fix_response

POOLS = ("judge_yes", "judge_no", "refine", "actor")
COUNT_KEYS = ("prompts", "responses", "blank", "passing", "failing", "fixed", "unfixable", "judge_dropped", *POOLS)
_PLACEHOLDER = re.compile(r"\[.*?\]")
_BULLET_LINE = re.compile(r"^\s*(?:\*[^\*]|-).*$", re.MULTILINE)  # the checker's bullet definition


def _quoted(words: Sequence[str]) -> str:
    q = [f'"{w}"' for w in words]
    return q[0] if len(q) == 1 else ", ".join(q[:-1]) + " and " + q[-1]


def describe(instruction_id: str, kwargs: Mapping[str, Any] | None) -> str:
    """A short description of one requirement, re-derived from (id, kwargs) the way the prompt sentence of
    `constraint_prompts.MAKERS` states it. Raises ValueError for an id outside `repair.SUPPORTED_IDS`."""
    kw = {k: v for k, v in (kwargs or {}).items() if v is not None}
    i = instruction_id
    if i == "change_case:english_lowercase":
        return "The entire response is in lowercase letters, with no capital letters"
    if i == "change_case:english_capital":
        return "The entire response is in English and in capital letters only"
    if i == "punctuation:no_comma":
        return "The response uses no commas"
    if i == "keywords:existence":
        return f"The response includes the words {_quoted(kw['keywords'])}"
    if i == "keywords:forbidden_words":
        return f"The response avoids the words {_quoted(kw['forbidden_words'])}"
    if i in ("length_constraints:number_words", "length_constraints:number_sentences"):
        unit = "words" if i.endswith("words") else "sentences"
        n = kw["num_words"] if unit == "words" else kw["num_sentences"]
        return f"The response has {'fewer than' if kw['relation'] == 'less than' else 'at least'} {n} {unit}"
    if i == "detectable_format:number_bullet_lists":
        return f'The response is exactly {kw["num_bullets"]} markdown bullet points, each starting with "* "'
    if i == "detectable_format:title":
        return "The response has a title wrapped in double angular brackets, such as <<my title>>"
    if i == "detectable_content:postscript":
        return f"The response ends with a postscript starting with {kw['postscript_marker']}"
    if i == "startend:end_checker":
        return f'The response finishes with the exact phrase "{kw["end_phrase"]}" and nothing after it'
    if i == "startend:quotation":
        return "The entire response is wrapped in double quotation marks"
    if i == "detectable_content:number_placeholders":
        return f"The response has at least {kw['num_placeholders']} placeholder(s) in square brackets, such as [name]"
    raise ValueError(f"no requirement description for instruction id {i!r}; supported: {', '.join(SUPPORTED_IDS)}")


def _evidence(instruction_id: str, kwargs: Mapping[str, Any] | None, response: str, met: bool) -> str:
    """Why a requirement is (not) met, pointing at the response; "" when there is nothing useful to add."""
    kw = {k: v for k, v in (kwargs or {}).items() if v is not None}
    i = instruction_id
    if i in ("length_constraints:number_words", "length_constraints:number_sentences"):
        n = count_words(response) if i.endswith("words") else count_sentences(response)
        return f"it has {n} {'words' if i.endswith('words') else 'sentences'}"
    if i == "detectable_format:number_bullet_lists":
        return f"it has {len(_BULLET_LINE.findall(response))} bullet points"
    if i == "detectable_content:number_placeholders":
        return f"it has {len(_PLACEHOLDER.findall(response))} placeholder(s)"
    if met:
        return ""
    if i in ("change_case:english_lowercase", "change_case:english_capital"):
        lower = i.endswith("lowercase")
        word = re.search(r"\w*[A-Z]\w*" if lower else r"\w*[a-z]\w*", response)
        if word:
            return f'it contains {"capital" if lower else "lowercase"} letters, such as "{word.group(0)}"'
        return "it is not recognizably English"
    if i == "punctuation:no_comma":
        return f"it contains {response.count(',')} comma(s)"
    if i == "keywords:existence":
        missing = [k for k in kw["keywords"] if not re.search(k, response, re.IGNORECASE)]
        return f"{_quoted(missing)} {'is' if len(missing) == 1 else 'are'} missing"
    if i == "keywords:forbidden_words":
        used = [w for w in kw["forbidden_words"] if re.search(r"\b" + w + r"\b", response, re.IGNORECASE)]
        return f"it uses {_quoted(used)}"
    if i == "detectable_format:title":
        return "there is no title in double angular brackets"
    if i == "detectable_content:postscript":
        return f"there is no postscript starting with {kw['postscript_marker']}"
    if i == "startend:end_checker":
        tail = response.strip()[-40:].replace("\n", " ")
        return f'it ends with "{tail}" instead'
    if i == "startend:quotation":
        return "it does not both start and end with a double quotation mark"
    return ""


def critique_text(
    instruction_id_list: Sequence[str],
    kwargs: Sequence[Mapping[str, Any] | None],
    constraint_texts: Sequence[str] | None,
    strict_results: Sequence[bool],
    *,
    response: str | None = None,
) -> str:
    """A step-by-step verification, one numbered line per requirement ("<requirement>: met." or
    "<requirement>: not met: <why>."), ending with "Final Judgement: Yes" iff every strict result is True.

    `constraint_texts` (one per id) name the requirements; None derives them with `describe`. With `response`,
    each line also points at the response (counts, offending words)."""
    n = len(instruction_id_list)
    if len(kwargs) != n or len(strict_results) != n or (constraint_texts is not None and len(constraint_texts) != n):
        raise ValueError(
            f"critique_text: got {n} ids, {len(kwargs)} kwargs, {len(strict_results)} results and "
            f"{'no' if constraint_texts is None else len(constraint_texts)} constraint texts"
        )
    texts = constraint_texts
    if texts is None:
        texts = [describe(i, k) for i, k in zip(instruction_id_list, kwargs)]
    lines = ["Checking each requirement of the instruction against the response:"]
    for j, (iid, kw, text, met) in enumerate(zip(instruction_id_list, kwargs, texts, strict_results), 1):
        why = _evidence(iid, kw, response, bool(met)) if response is not None else ""
        text = text.strip()
        if text.endswith(".") and not re.search(r"\b\w\.\w\.$", text):  # keep the dot of "P.S."
            text = text[:-1]
        if met:
            lines.append(f"{j}. {text}: met{f' ({why})' if why else ''}.")
        else:
            lines.append(f"{j}. {text}: not met{f': {why}' if why else ''}.")
    lines.append(f"Final Judgement: {'Yes' if all(strict_results) else 'No'}")
    return "\n".join(lines)


def _action(instruction_id: str, kwargs: Mapping[str, Any] | None) -> str:
    kw = {k: v for k, v in (kwargs or {}).items() if v is not None}
    i = instruction_id
    if i in ("length_constraints:number_words", "length_constraints:number_sentences"):
        unit = "words" if i.endswith("words") else "sentences"
        n = kw["num_words"] if unit == "words" else kw["num_sentences"]
        less = kw["relation"] == "less than"
        return f"shorten it to fewer than {n} {unit}" if less else f"extend it to at least {n} {unit}"
    if i == "keywords:existence":
        return f"work in the words {_quoted(kw['keywords'])}"
    if i == "keywords:forbidden_words":
        return f"delete the words {_quoted(kw['forbidden_words'])}"
    if i == "detectable_format:number_bullet_lists":
        return f'format it as exactly {kw["num_bullets"]} bullet points starting with "* "'
    if i == "detectable_content:postscript":
        return f"add a postscript starting with {kw['postscript_marker']} at the end"
    if i == "startend:end_checker":
        return f'finish it with the exact phrase "{kw["end_phrase"]}"'
    if i == "detectable_content:number_placeholders":
        return f"add placeholders in square brackets such as [name] until there are at least {kw['num_placeholders']}"
    return {
        "change_case:english_lowercase": "rewrite it all in lowercase letters",
        "change_case:english_capital": "rewrite it all in capital letters",
        "punctuation:no_comma": "remove every comma",
        "detectable_format:title": "add a title wrapped in double angular brackets",
        "startend:quotation": "wrap the whole response in double quotation marks",
    }[i]


def reflection_text(
    instruction_id_list: Sequence[str], kwargs: Sequence[Mapping[str, Any] | None], strict_results: Sequence[bool]
) -> str:
    """The short reflection before a refined response: which requirements failed and what will change."""
    failing = [(i, k) for i, k, ok in zip(instruction_id_list, kwargs, strict_results) if not ok]
    if not failing:
        raise ValueError("reflection_text: every requirement is met, there is nothing to refine")
    actions = [_action(i, k) for i, k in failing]
    plan = actions[0] if len(actions) == 1 else "; ".join(actions[:-1]) + "; and " + actions[-1]
    return (
        f"The response misses {len(failing)} of the {len(instruction_id_list)} requirements. To fix it I will "
        f"{plan}, keeping everything that was already right."
    )


def refinement_target(reflection: str, refined: str) -> str:
    """The refiner's refinement output: reflection, then the refined response between the markers."""
    return f"{reflection}\n{START_MARKER}\n{refined}\n{END_MARKER}"


# ---------------------------------------------------------------- synthetic drafts (offline actor stand-in)

_DRAFT_SENTENCES = (
    "First, it helps to look at the basics, because they shape everything else.",
    "This is really a topic where small details matter.",
    "Many people overlook it, but it is actually quite simple once you see the pattern.",
    "Think of a quiet morning in April, when everything feels new.",
    "The most important part is to stay curious, patient and kind.",
    "In the end, it is very rewarding to see the result.",
    "You can basically start with one small change today.",
    "Some of the best ideas come from simply paying attention.",
    "Over time, the effort adds up, and the results speak for themselves.",
    "Mr. Green, a teacher from Ohio, always said that practice beats talent.",
    "There are three things to remember: timing, care, and a bit of luck.",
    "Every journey starts with a single step, even on a cold and windy day.",
    "The old harbor was quiet, and only a lantern glowed by the water.",
    "Patience, more than anything, is what makes the difference here.",
    "Honestly, I think anyone can do this with a little practice.",
    "It is a bit like following a compass through a meadow at dusk.",
)


def synthetic_responses(record: Mapping[str, Any], n: int, *, seed: int) -> list[str]:
    """`n` drafts for one prompt record, standing in for actor samples when no model is at hand: a few sentences
    (commas, capitals, some forbidden words and keywords) as paragraphs, a list or a titled text, of which a
    random subset of the constraints is then made to hold with `fix_response` — so some drafts pass and most
    fail for different reasons. Deterministic in (seed, record["key"], index)."""
    task = str(record["prompt"]).split(". ")[0].strip().rstrip(".")
    ids, kwargs = list(record["instruction_id_list"]), list(record["kwargs"])
    out = []
    for j in range(n):
        rng = random.Random(derive_seed(seed, "synthetic-response", record.get("key"), j))
        sentences = [f"Let me {task[:1].lower() + task[1:]}.", *rng.sample(_DRAFT_SENTENCES, rng.randint(1, 8))]
        style = rng.random()
        if style < 0.25:
            marker = rng.choice(("* ", "- ", "1. "))
            text = sentences[0] + "\n\n" + "\n".join(marker + s for s in sentences[1:])
        elif style < 0.4:
            text = f"<<{task.split(' ')[-1].title()} Notes>>\n\n" + " ".join(sentences)
        else:
            cut = rng.randint(1, len(sentences))
            text = " ".join(sentences[:cut]) + ("\n\n" + " ".join(sentences[cut:]) if cut < len(sentences) else "")
        subset = [k for k in range(len(ids)) if rng.random() < 0.5]
        if subset:
            fixed = fix_response(text, [ids[k] for k in subset], [kwargs[k] for k in subset])
            text = fixed if fixed is not None else text
        out.append(text)
    return out


# ---------------------------------------------------------------- SFT examples


def _example(messages: list[dict[str, str]], target: str, pool: str, prompt_id: str) -> dict[str, Any]:
    """Same record format as `data.py`'s refiner SFT examples."""
    return {"messages": [*messages, {"role": "assistant", "content": target}], "pool": pool, "prompt_id": prompt_id}


def _read_record(record: Any, index: int) -> tuple[str, list[str], list[Any], str]:
    where = f"prompts[{index}]"
    if not isinstance(record, Mapping):
        raise ValueError(f"{where}: expected a dict with keys prompt, instruction_id_list, kwargs")
    for key in ("prompt", "instruction_id_list", "kwargs"):
        if key not in record:
            raise ValueError(f"{where}: missing key {key!r}")
    prompt, ids, kwargs = record["prompt"], record["instruction_id_list"], record["kwargs"]
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"{where}: key 'prompt' must be a non-empty string")
    if not isinstance(ids, (list, tuple)) or not isinstance(kwargs, (list, tuple)) or len(ids) != len(kwargs):
        raise ValueError(f"{where}: keys 'instruction_id_list' and 'kwargs' must be lists of equal length")
    for iid in ids:
        if iid not in SUPPORTED_IDS:
            raise ValueError(f"{where}: unsupported instruction id {iid!r}; supported: {', '.join(SUPPORTED_IDS)}")
    return prompt, list(ids), list(kwargs), str(record.get("key", index))


def _dedup_shuffle(examples: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """Seeded shuffle; drops exact duplicates (same messages)."""
    seen, out = set(), []
    for ex in examples:
        key = tuple((m["role"], m["content"]) for m in ex["messages"])
        if key not in seen:
            seen.add(key)
            out.append(ex)
    random.Random(seed).shuffle(out)
    return out


def bootstrap_examples(
    prompts: Sequence[Mapping[str, Any]],
    responses_per_prompt: Sequence[Sequence[str]],
    templates: Templates = DEFAULT_TEMPLATES,
    *,
    seed: int,
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, int]]:
    """Stage-0 SFT examples from checker-verified judgments and rule fixes. Returns (pools, counts).

    pools (each de-duplicated and shuffled with `seed`; records as `data.py`: {messages, pool, prompt_id}, with
    pool = "bootstrap_<name>"):
    - "judge_yes" / "judge_no": judge prompt on (instruction, response) -> `critique_text`, for every response and
      every verified fix (a "Yes"); the majority class is capped at twice the minority (so none at all if one class
      is empty);
    - "refine": failing responses whose fix verifies: `refine_messages(instruction, response, critique)` ->
      reflection + [[start]] fixed response [[end]];
    - "actor": the instruction as one user turn -> the fixed or already passing response.
    counts: prompts, responses, blank (skipped), passing, failing, fixed, unfixable, per-pool sizes, and
    judge_dropped (examples removed by the class balance)."""
    if len(prompts) != len(responses_per_prompt):
        raise ValueError(f"bootstrap_examples: {len(prompts)} prompts but {len(responses_per_prompt)} response lists")
    raw: dict[str, list[dict[str, Any]]] = {p: [] for p in POOLS}
    counts: Counter[str] = Counter({k: 0 for k in COUNT_KEYS})
    counts["prompts"] = len(prompts)
    for i, (record, responses) in enumerate(zip(prompts, responses_per_prompt)):
        instruction, ids, kwargs, pid = _read_record(record, i)
        texts = [describe(iid, kw) for iid, kw in zip(ids, kwargs)]
        if isinstance(responses, str):
            raise ValueError(f"responses_per_prompt[{i}]: expected a list of responses, got a string")
        for j, response in enumerate(responses):
            if not isinstance(response, str):
                raise ValueError(f"responses_per_prompt[{i}][{j}]: expected a string, got {type(response).__name__}")
            counts["responses"] += 1
            if not response.strip():
                counts["blank"] += 1
                continue
            strict, _ = ifeval.check(ids, kwargs, instruction, response)
            critique = critique_text(ids, kwargs, texts, strict, response=response)
            if parse_judgement(critique) != ("yes" if all(strict) else "no"):
                raise AssertionError(f"critique does not parse back: {critique!r}")  # a bug here, not bad input
            passing = all(strict)
            counts["passing" if passing else "failing"] += 1
            pool = "judge_yes" if passing else "judge_no"
            messages = judge_messages(instruction, response, templates)
            raw[pool].append(_example(messages, critique, f"bootstrap_{pool}", pid))
            target = response
            if not passing:
                fixed = fix_response(response, ids, kwargs)
                output = None if fixed is None else refinement_target(reflection_text(ids, kwargs, strict), fixed)
                if fixed is None or parse_refinement(output) != fixed.strip():
                    counts["unfixable"] += 1
                    continue
                counts["fixed"] += 1
                messages = refine_messages(instruction, response, critique, templates)
                raw["refine"].append(_example(messages, output, "bootstrap_refine", pid))
                target = fixed
                # The fixed answer, judged: the judge sees the same draft fail and, repaired, pass.
                fixed_strict, _ = ifeval.check(ids, kwargs, instruction, fixed)
                raw["judge_yes"].append(
                    _example(
                        judge_messages(instruction, fixed, templates),
                        critique_text(ids, kwargs, texts, fixed_strict, response=fixed),
                        "bootstrap_judge_yes",
                        pid,
                    )
                )
            raw["actor"].append(_example(actor_messages(instruction), target, "bootstrap_actor", pid))
    pools = {p: _dedup_shuffle(raw[p], derive_seed(seed, "bootstrap", p)) for p in POOLS}
    cap = 2 * min(len(pools["judge_yes"]), len(pools["judge_no"]))
    for p in ("judge_yes", "judge_no"):
        counts["judge_dropped"] += max(0, len(pools[p]) - cap)
        pools[p] = pools[p][:cap]
    counts.update({p: len(pools[p]) for p in POOLS})
    return pools, dict(counts)


def refiner_mixture(pools: Mapping[str, Sequence[dict[str, Any]]], refine_share: float, *, seed: int) -> list[dict]:
    """The refiner's Stage-0 SFT examples: every refinement, plus judgments so that refinements make up
    ``refine_share`` of the result (all judgments when there are too few), taken alternately from the Yes and No
    pools; shuffled with ``seed``. A small refiner learns the one-line verdict from a few examples but needs more
    of the longer refinement protocol, hence the share."""
    if not 0.0 < refine_share <= 1.0:
        raise ValueError(f"refine_share must be in (0, 1], got {refine_share}")
    refine = list(pools["refine"])
    want = len(pools["judge_yes"]) + len(pools["judge_no"])
    if refine:
        want = min(want, round(len(refine) * (1.0 - refine_share) / refine_share))
    yes, no, judge = list(pools["judge_yes"]), list(pools["judge_no"]), []
    while len(judge) < want and (yes or no):
        for pool in (yes, no):
            if pool and len(judge) < want:
                judge.append(pool.pop(0))
    out = refine + judge
    random.Random(derive_seed(seed, "refiner-mixture")).shuffle(out)
    return out
