"""Does a refiner check requirements or only guess? Teacher-forced decisions on its requirement lines.

For each judgment example in a JSONL of chat records (the Stage-0 layout: user turn = the judge prompt, assistant
turn = "Checking each requirement ...\\n1. <requirement>: met" / ": not met: <evidence>" ... "Final Judgement: ..."),
the refiner reads the prompt and the target, and at each requirement line's colon we read its next-token log-odds
s = log P(" met") - log P(" not") (the first token of each continuation). Prints JSON:
- ``lines_right``: per example class (target ends Yes / No), [lines where s > 0 matches the truth, lines]. A judge
  that always says "not met" (or always "met") is right on one class only: this mixes its default with its signal;
- ``auc``: the ROC AUC of s for met vs not-met lines (0.5 = s carries no information about the truth, whatever the
  default), with a percentile bootstrap interval resampling examples (an example's lines share a response, so they
  are not independent), and the mean s of each class;
- ``auc_within_type``: the AUC over pairs of lines of the same instruction type only, with its interval: the
  pooled AUC also rewards knowing which types tend to be met, without reading the response;
- ``per_type``: the same per IFEval instruction type (recovered from the requirement wording), for types with both
  classes present.

    python benchmarks/judge_lines.py --refiner WORKDIR/spar/iter_0/sft_refiner/hf \\
        --data WORKDIR/spar/iter_0/bootstrap/refiner_sft.jsonl --examples 40 [--lines-out lines.jsonl]
"""

import argparse
import json
import os
import re
from collections import defaultdict

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from scipy.stats import rankdata

from spar_jax.models.pretrained import from_pretrained
from spar_jax.models.tokenizer import chat_prompt_ids, load_tokenizer

LINE = re.compile(r"^\d+\. ([^\n]*?): (met|not met)", re.M)
# The requirement wording of `spar_jax.spar.bootstrap.describe`, matched at the start of a line's requirement text.
TYPES = (
    ("change_case:english_lowercase", r"The entire response is in lowercase letters"),
    ("change_case:english_capital", r"The entire response is in English and in capital letters"),
    ("startend:quotation", r"The entire response is wrapped in double quotation marks"),
    ("punctuation:no_comma", r"The response uses no commas"),
    ("keywords:existence", r"The response includes the words "),
    ("keywords:forbidden_words", r"The response avoids the words "),
    ("length_constraints:number_words", r"The response has (fewer than|at least) \d+ words$"),
    ("length_constraints:number_sentences", r"The response has (fewer than|at least) \d+ sentences$"),
    ("detectable_format:number_bullet_lists", r"The response is exactly \d+ markdown bullet points"),
    ("detectable_format:title", r"The response has a title wrapped in double angular brackets"),
    ("detectable_content:postscript", r"The response ends with a postscript starting with "),
    ("startend:end_checker", r"The response finishes with the exact phrase "),
    ("detectable_content:number_placeholders", r"The response has at least \d+ placeholder\(s\) in square brackets"),
)  # fmt: skip


def instruction_type(requirement: str) -> str:
    """The IFEval instruction id whose requirement wording ``requirement`` is, or "unknown"."""
    return next((iid for iid, pattern in TYPES if re.match(pattern, requirement.strip())), "unknown")


def auc(scores, positive) -> float:
    """ROC AUC of ``scores`` [n] for the boolean labels ``positive`` [n]: P(s_pos > s_neg) + P(s_pos = s_neg) / 2,
    from average ranks (Mann-Whitney U / (n_pos * n_neg)). NaN when either class is empty."""
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    return float((rankdata(s)[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def auc_within(scores, positive, strata) -> float:
    """The AUC over (positive, negative) pairs of the same stratum only: sum_t U_t / sum_t n_pos_t * n_neg_t. A score
    that knows only each stratum's base rate (which requirement types tend to be met) gets 0.5 here, however
    different the rates. NaN when no stratum has both classes."""
    s, y, g = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool), np.asarray(strata)
    u = pairs = 0.0
    for t in np.unique(g):
        m = g == t
        n = int(y[m].sum()) * int((~y[m]).sum())
        if n:
            u, pairs = u + auc(s[m], y[m]) * n, pairs + n
    return u / pairs if pairs else float("nan")


def bootstrap_auc(
    example, scores, positive, strata=None, *, resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> dict:
    """The AUC (`auc_within` the ``strata`` when given) and its percentile interval, resampling examples with
    replacement (all lines of a drawn example come along). ``example`` [n] names each line's example. Resamples
    without a usable pair are left out (``resamples_used`` counts the rest)."""
    ex, s, y = np.asarray(example), np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    g = None if strata is None else np.asarray(strata)
    stat = (lambda i: auc(s[i], y[i])) if g is None else (lambda i: auc_within(s[i], y[i], g[i]))
    groups = [np.flatnonzero(ex == e) for e in np.unique(ex)]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        v = stat(np.concatenate([groups[k] for k in rng.integers(0, len(groups), len(groups))]))
        if not np.isnan(v):
            values.append(v)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail]) if values else (float("nan"), float("nan"))
    return {"auc": stat(np.arange(len(s))), "low": float(low), "high": float(high), "resamples_used": len(values)}


def summarize(lines, *, resamples: int = 2000, seed: int = 0) -> dict:
    """``lines``: dicts {example, s, met, type} -> the overall AUC with interval, class means and counts; the AUC
    within instruction types (pairs of one type only: information beyond which types tend to be met); and the
    overall statistics per type (types with both classes only; the others listed under ``one_class_types``)."""

    def stats(rows):
        ex, s, y = ([r[k] for r in rows] for k in ("example", "s", "met"))
        s, y = np.asarray(s, dtype=np.float64), np.asarray(y, dtype=bool)
        return {
            **bootstrap_auc(ex, s, y, resamples=resamples, seed=seed),
            "n_met": int(y.sum()),
            "n_not_met": int((~y).sum()),
            "mean_s_met": float(s[y].mean()) if y.any() else float("nan"),
            "mean_s_not_met": float(s[~y].mean()) if (~y).any() else float("nan"),
        }

    by_type = defaultdict(list)
    for r in lines:
        by_type[r["type"]].append(r)
    both = {t: rows for t, rows in sorted(by_type.items()) if len({r["met"] for r in rows}) == 2}
    return {
        "auc": stats(lines),
        "auc_within_type": bootstrap_auc(
            *([r[k] for r in lines] for k in ("example", "s", "met", "type")), resamples=resamples, seed=seed
        ),
        "per_type": {t: stats(rows) for t, rows in both.items()},
        "one_class_types": {t: len(rows) for t, rows in sorted(by_type.items()) if t not in both},
    }


def line_scores(model, tok, records) -> list[dict]:
    """One teacher-forced forward per example; per requirement line {example, s, met, type, yes_example}.

    s is read at the position before the token that starts the line's " met" / " not"; the tokens before it must be
    exactly the tokenization of the target up to the colon (checked; such a line is read from its own prefix)."""
    (met,), (neg,) = tok.encode(" met", add_special_tokens=False), tok.encode(" not", add_special_tokens=False)
    graphdef, state = nnx.split(model)  # weights as arguments: a closed-over model is baked into every executable

    @jax.jit
    def log_odds(state, ids):  # [1, T] -> [T]: s at every position; only two vocabulary columns leave the device
        logits = nnx.merge(graphdef, state)(ids)[0]
        return logits[:, met] - logits[:, neg]

    def logits_at(ids, positions):
        padded = jnp.asarray([ids + [0] * (-len(ids) % 64)])  # one compiled shape per 64 tokens
        out = np.asarray(log_odds(state, padded))
        return [float(out[p]) for p in positions]

    lines = []
    for e, r in enumerate(records):
        prompt, target = chat_prompt_ids(tok, r["messages"][:-1]), r["messages"][-1]["content"]
        full = tok.encode(target, add_special_tokens=False)
        matches = list(LINE.finditer(target))
        prefixes = [tok.encode(target[: m.start(2) - 1], add_special_tokens=False) for m in matches]
        aligned = [full[: len(p)] == p for p in prefixes]
        shared = iter(logits_at(prompt + full, [len(prompt) + len(p) - 1 for p, a in zip(prefixes, aligned) if a]))
        for m, p, a in zip(matches, prefixes, aligned):
            s = next(shared) if a else logits_at(prompt + p, [len(prompt) + len(p) - 1])[0]
            lines.append(
                {
                    "example": e,
                    "s": float(s),
                    "met": m.group(2) == "met",
                    "type": instruction_type(m.group(1)),
                    "yes_example": target.rstrip().endswith("Yes"),
                }
            )
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--refiner", required=True, help="HF checkpoint directory of the refiner (or demo)")
    ap.add_argument("--data", required=True, help="JSONL of judge examples (messages, assistant turn last)")
    ap.add_argument("--examples", type=int, default=40, help="judge examples to read (the first ones)")
    ap.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples of the examples")
    ap.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    ap.add_argument("--lines-out", help="also write every line's {example, s, met, type, yes_example} as JSONL")
    args = ap.parse_args(argv)
    model, tok = from_pretrained(args.refiner), load_tokenizer(args.refiner)
    with open(args.data, encoding="utf-8") as f:
        records = [r for r in map(json.loads, f) if r["messages"][-1]["content"].startswith("Checking each")]
    records = records[: args.examples]
    lines = line_scores(model, tok, records)
    right = {"yes_examples": [0, 0], "no_examples": [0, 0]}
    for r in lines:
        kind = right["yes_examples" if r["yes_example"] else "no_examples"]
        kind[0], kind[1] = kind[0] + int((r["s"] > 0) == r["met"]), kind[1] + 1
    if args.lines_out:
        tmp = args.lines_out + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in lines)
        os.replace(tmp, args.lines_out)
    head = {"refiner": args.refiner, "data": args.data, "examples": len(records), "lines": len(lines)}
    print(json.dumps({**head, "lines_right": right, **summarize(lines, resamples=args.resamples, seed=args.seed)}))


if __name__ == "__main__":
    main()
