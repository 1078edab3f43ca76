"""LLMBar (Zeng et al., 2024): a model used as the SPaR judge, scored pairwise and as the SPaR paper reports it.

Each record pairs an instruction with two outputs and says which one follows it better (``label`` 1 or 2). Both
outputs are judged with the SPaR judgment prompt and k votes. Two scorings:

- *pairwise* (keys ``natural`` ... ``overall``): a pair is correct when the better output's Yes-fraction (the SPaR
  value V = #Yes / #valid votes, 0 when no vote is valid) is *strictly* higher than the other's (ties are wrong).
- *pointwise*, the paper's Acc. and F1 (keys ``pointwise_acc_*`` / ``pointwise_f1_*``): every output is one binary
  item, the better output of a pair labelled "follows" (positive) and the other "does not follow"; the judge
  predicts "follows" when its k-vote majority is Yes (a tie or no valid vote predicts "does not follow").
  Acc. = correct items / (2 x pairs); F1 = 2TP / (2TP + FP + FN) for the positive class. Per subset, then the
  adversarial average and the overall "Average" as *unweighted means of subsets* (4 and 5 subsets).

Why this reading of the paper (Cheng et al. 2024, Table 2; the authors' code has no LLMBar script): its accuracies
are multiples of 1/(2 x pairs), not of 1/pairs (Manual: 68.5 % = 63/92 outputs of 46 pairs; Natural 70.5 % = 141/200),
so both outputs are scored one by one; its "Average" column is the mean of the five subsets (LLaMA3-8B-Instruct:
(60.0 + 55.4 + 47.9 + 51.1 + 54.5) / 5 = 53.8 Acc., (51.8 + 46.1 + 39.5 + 36.6 + 45.0) / 5 = 43.8 F1). The positive
class of F1 is not stated; "follows" (the Yes verdict) is the label a binary F1 defaults to (pos_label = 1).
"""

from __future__ import annotations

import dataclasses
import os
from collections import defaultdict
from typing import Any, Sequence

from spar_jax import files
from spar_jax.eval.remote import is_url, read_json
from spar_jax.eval.summary import base_summary, markdown_table, pct, ratio, write_summary
from spar_jax.judge import generation as gen
from spar_jax.judge.settings import JudgeConfig, run_judge, vote_counts
from spar_jax.judge.votes import Judgement

DEFAULT_SOURCE = (
    "https://raw.githubusercontent.com/princeton-nlp/LLMBar/900616bff90b6c6c8e1681f7d079250637c55992/Dataset/LLMBar"
)
NATURAL = "Natural"
ADVERSARIAL = ("GPTInst", "GPTOut", "Manual", "Neighbor")
SUBSETS = (NATURAL, *ADVERSARIAL)
JUDGEMENTS_FILE = "judgements.jsonl"


@dataclasses.dataclass(frozen=True)
class Pair:
    subset: str
    index: int
    instruction: str
    outputs: tuple[str, str]
    label: int  # 1 or 2: the better output


@dataclasses.dataclass(frozen=True)
class LLMBarConfig:
    """``source``: a folder holding ``<Subset>.json`` files (or upstream's ``Natural/dataset.json`` and
    ``Adversarial/<Subset>/dataset.json`` layout), or the URL of upstream's ``Dataset/LLMBar`` folder (default: the
    GitHub repository at a fixed commit). ``limit``: the first N pairs of each subset (0 = all). ``subsets``: the
    LLMBar subsets scored. ``judge``: how the judge is sampled. ``label``: names the judge in summaries and plots."""

    source: str = DEFAULT_SOURCE
    subsets: tuple[str, ...] = SUBSETS
    limit: int = 0
    judge: JudgeConfig = JudgeConfig()
    label: str = ""

    def __post_init__(self):
        object.__setattr__(self, "subsets", tuple(self.subsets))
        unknown = [s for s in self.subsets if s not in SUBSETS]
        if unknown or not self.subsets:
            raise ValueError(
                f"LLMBarConfig.subsets: unknown or empty {unknown or list(self.subsets)}; choose from {list(SUBSETS)}"
            )
        if not isinstance(self.limit, int) or self.limit < 0:
            raise ValueError(f"LLMBarConfig.limit must be an int >= 0, got {self.limit!r}")


def subset_location(source: str, subset: str) -> str:
    """Where ``subset`` lives under ``source``: upstream's layout for URLs, else whichever local layout exists."""
    upstream = f"{NATURAL}/dataset.json" if subset == NATURAL else f"Adversarial/{subset}/dataset.json"
    if is_url(source):
        return f"{source.rstrip('/')}/{upstream}"
    flat, nested = os.path.join(source, f"{subset}.json"), os.path.join(source, upstream)
    return nested if os.path.exists(nested) and not os.path.exists(flat) else flat


def parse_pairs(data: Any, subset: str, where: str) -> list[Pair]:
    """Validates one subset file (a JSON array of {input, output_1, output_2, label}) into pairs."""
    if not isinstance(data, list):
        raise ValueError(f"{where}: expected a JSON array of LLMBar records, got {type(data).__name__}")
    pairs = []
    for i, r in enumerate(data):
        if not isinstance(r, dict):
            raise ValueError(f"{where}: record {i}: expected a JSON object")
        for key in ("input", "output_1", "output_2"):
            if not isinstance(r.get(key), str):
                raise ValueError(f"{where}: record {i}: key {key!r} must be a string")
        if r.get("label") not in (1, 2) or isinstance(r.get("label"), bool):
            raise ValueError(f"{where}: record {i}: key 'label' must be 1 or 2, got {r.get('label')!r}")
        pairs.append(Pair(subset, i, r["input"], (r["output_1"], r["output_2"]), r["label"]))
    if not pairs:
        raise ValueError(f"{where}: no LLMBar records")
    return pairs


def load_llmbar(source: str = DEFAULT_SOURCE, subsets: Sequence[str] = SUBSETS, limit: int = 0) -> list[Pair]:
    """The pairs of ``subsets`` in that order (the first ``limit`` of each when limit > 0)."""
    pairs = []
    for subset in subsets:
        location = subset_location(source, subset)
        loaded = parse_pairs(read_json(location, f"LLMBar subset {subset}"), subset, location)
        pairs += loaded[:limit] if limit else loaded
    return pairs


def yes_fraction(j: Judgement) -> float:
    """The SPaR value V of a judgment, 0.0 when no vote is valid."""
    return j.value if j.value is not None else 0.0


def pair_correct(better: float, worse: float) -> bool:
    """A pair is judged correctly only when the better output's Yes-fraction is strictly higher (ties are wrong)."""
    return better > worse


def llmbar_metrics(rows: Sequence[tuple[str, float, float]]) -> dict[str, Any]:
    """Accuracy per subset, adversarial average and overall from (subset, V of better, V of worse) rows.

    ``<subset>`` = accuracy of that subset (lower-case key); ``adversarial_avg`` = mean of the adversarial subsets
    present (LLMBar's "Adversarial average"); ``overall`` = accuracy over all pairs; ``overall_macro`` = mean of the
    subsets present. Also returns per-subset pair and tie counts (tie = equal values).
    """
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # pairs, correct, ties
    for subset, better, worse in rows:
        c = counts[subset]
        c[0] += 1
        c[1] += pair_correct(better, worse)
        c[2] += better == worse
    acc = {s: ratio(c[1], c[0]) for s, c in counts.items()}
    ordered = [s for s in SUBSETS if s in acc] + sorted(s for s in acc if s not in SUBSETS)
    adversarial = [acc[s] for s in ADVERSARIAL if s in acc]
    metrics = {s.lower(): acc[s] for s in ordered}
    metrics["adversarial_avg"] = sum(adversarial) / len(adversarial) if adversarial else None
    metrics["overall"] = ratio(sum(c[1] for c in counts.values()), sum(c[0] for c in counts.values()))
    metrics["overall_macro"] = sum(acc.values()) / len(acc) if acc else None
    per_subset = {s: {"pairs": counts[s][0], "correct": counts[s][1], "ties": counts[s][2]} for s in ordered}
    return {"metrics": metrics, "per_subset": per_subset}


def pointwise_counts(better_yes: bool, worse_yes: bool) -> tuple[int, int, int, int]:
    """(TP, FP, FN, TN) of one pair's two items: the better output is the positive, the worse the negative."""
    return int(better_yes), int(worse_yes), int(not better_yes), int(not worse_yes)


def f1_score(tp: int, fp: int, fn: int) -> float | None:
    """Binary F1 of the positive class, 2TP / (2TP + FP + FN); None when undefined (no positive item or prediction)."""
    return ratio(2 * tp, 2 * tp + fp + fn)


def pointwise_metrics(rows: Sequence[tuple[str, bool, bool]]) -> dict[str, Any]:
    """The paper's Acc. and F1 from (subset, better output judged Yes, worse output judged Yes) rows.

    Returns ``metrics`` (``pointwise_acc_<subset>``, ``pointwise_f1_<subset>``, ``..._adversarial_avg`` = mean of the
    adversarial subsets present, ``..._overall`` = mean of all subsets present, as the paper's "Average") and
    ``confusion`` ({subset: {tp, fp, fn, tn}}).
    """
    confusion: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for subset, better_yes, worse_yes in rows:
        confusion[subset] = [a + b for a, b in zip(confusion[subset], pointwise_counts(better_yes, worse_yes))]
    ordered = [s for s in SUBSETS if s in confusion] + sorted(s for s in confusion if s not in SUBSETS)
    acc = {s: ratio(c[0] + c[3], sum(c)) for s, c in confusion.items()}
    f1 = {s: f1_score(c[0], c[1], c[2]) for s, c in confusion.items()}
    metrics: dict[str, float | None] = {}
    for name, per in (("acc", acc), ("f1", f1)):
        metrics.update({f"pointwise_{name}_{s.lower()}": per[s] for s in ordered})
        adversarial = [per[s] for s in ADVERSARIAL if s in per]
        metrics[f"pointwise_{name}_adversarial_avg"] = _mean(adversarial)
        metrics[f"pointwise_{name}_overall"] = _mean([per[s] for s in ordered])
    keys = ("tp", "fp", "fn", "tn")
    return {"metrics": metrics, "confusion": {s: dict(zip(keys, confusion[s])) for s in ordered}}


def _mean(values: Sequence[float | None]) -> float | None:
    """Mean of the defined values; None if any is undefined or there are none (an average never hides a gap)."""
    return None if not values or any(v is None for v in values) else sum(values) / len(values)


def render_markdown(summary: dict[str, Any]) -> str:
    m, judge = summary["metrics"], summary["settings"]["judge"]
    title = "LLMBar (pointwise SPaR judge)" + (f" — {summary['label']}" if summary["label"] else "")
    rows = [[s, c["pairs"], c["ties"], pct(m[s.lower()])] for s, c in summary["per_subset"].items()]
    rows += [
        ["Adversarial average", "", "", pct(m["adversarial_avg"])],
        [
            "Overall (all pairs)",
            sum(c["pairs"] for c in summary["per_subset"].values()),
            summary["pair_ties"],
            pct(m["overall"]),
        ],
        ["Overall (mean of subsets)", "", "", pct(m["overall_macro"])],
    ]
    lines = [
        f"# {title}",
        "",
        f"Each output judged with the SPaR judgment prompt, k = {judge['k']} votes at temperature "
        f"{judge['temperature']}; a pair is correct when the better output's Yes-fraction is strictly higher "
        "(ties count as wrong).",
        "",
        *markdown_table(["subset", "pairs", "ties", "accuracy %"], rows),
        "",
        f"Votes: {summary['votes']}, invalid: {summary['invalid_votes']}.",
        "",
        "## As the SPaR paper reports it (pointwise Acc. and F1)",
        "",
        "Each output is one item: the better output of a pair should be judged Yes (positive), the other No; the "
        "prediction is the k-vote majority (a tie or no valid vote counts as No). F1 is of the positive class; the "
        "averages are unweighted means of subsets, as in the paper's Table 2.",
        "",
        *markdown_table(
            ["subset", "outputs", "TP", "FP", "FN", "TN", "Acc. %", "F1 %"],
            [
                [
                    s,
                    sum(c.values()),
                    c["tp"],
                    c["fp"],
                    c["fn"],
                    c["tn"],
                    pct(m[f"pointwise_acc_{s.lower()}"]),
                    pct(m[f"pointwise_f1_{s.lower()}"]),
                ]
                for s, c in summary["confusion"].items()
            ]
            + [
                [
                    "Adversarial average",
                    "",
                    "",
                    "",
                    "",
                    "",
                    pct(m["pointwise_acc_adversarial_avg"]),
                    pct(m["pointwise_f1_adversarial_avg"]),
                ],
                [
                    "Average (mean of subsets)",
                    "",
                    "",
                    "",
                    "",
                    "",
                    pct(m["pointwise_acc_overall"]),
                    pct(m["pointwise_f1_overall"]),
                ],
            ],
        ),
    ]
    return "\n".join(lines) + "\n"


def run(engine, settings: LLMBarConfig, out_dir: str | os.PathLike) -> dict[str, Any]:
    """Judges every output of every pair in one engine call; writes judgements.jsonl, summary.json and report.md."""
    pairs = load_llmbar(settings.source, settings.subsets, settings.limit)
    items = [(p.instruction, out) for p in pairs for out in p.outputs]
    with gen.prompt_source([(f"{p.subset}/{p.index}", p.instruction) for p in pairs], settings.source):
        judgements = run_judge(engine, items, settings.judge, "llmbar")
    records, rows, points = [], [], []
    for p, j1, j2 in zip(pairs, judgements[0::2], judgements[1::2]):
        values = (yes_fraction(j1), yes_fraction(j2))
        better, worse = (values[0], values[1]) if p.label == 1 else (values[1], values[0])
        rows.append((p.subset, better, worse))
        yes = (j1.label == "yes", j2.label == "yes")
        points.append((p.subset, *(yes if p.label == 1 else yes[::-1])))
        records.append(
            {
                "subset": p.subset,
                "index": p.index,
                "label": p.label,
                "values": list(values),
                "correct": pair_correct(better, worse),
                "judgements": [j1.to_dict(), j2.to_dict()],
            }
        )
    files.write_jsonl(os.path.join(out_dir, JUDGEMENTS_FILE), records)
    stats, pointwise = llmbar_metrics(rows), pointwise_metrics(points)
    summary = base_summary(
        "llmbar",
        settings.label,
        {**stats["metrics"], **pointwise["metrics"]},
        settings,
        source=settings.source,
        per_subset=stats["per_subset"],
        confusion=pointwise["confusion"],
        pair_ties=sum(b == w for _, b, w in rows),
        **vote_counts(judgements),
    )
    write_summary(out_dir, summary, render_markdown(summary))
    return summary
