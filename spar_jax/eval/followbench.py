"""FollowBench: answer the constrained instructions of levels 1–5, have a judge model check each constraint, report
the soft satisfaction rate (SSR) per level and its average, plus the hard rate (HSR).

For a response at level n with n constraint checks, SSR counts the fraction of satisfied constraints and HSR whether
all are satisfied (FollowBench's definitions); a check is satisfied when the judge's k-vote majority is Yes (ties and
all-invalid votes count as not satisfied and are reported). The judge prompts are ours (``followbench_data``) and
are parsed like SPaR judgments. The judge is configurable (``followbench.judge_path``, default the refiner); the
FollowBench and SPaR papers used GPT-4, so every summary.json and report.md names the judge used and, unless its name
is a GPT-4 model, carries a ``note`` saying the numbers are not comparable with the papers'.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter, defaultdict
from typing import Any, Sequence

from spar_jax import files
from spar_jax.eval.followbench_data import (
    CATEGORIES,
    DEFAULT_SOURCE,
    LEVELS,
    Check,
    JudgeTemplates,
    Record,
    build_checks,
    load_followbench,
)
from spar_jax.eval.summary import base_summary, markdown_table, pct, write_summary
from spar_jax.judge import generation as gen
from spar_jax.judge.settings import JudgeConfig, vote_counts
from spar_jax.judge.templates import actor_messages
from spar_jax.judge.votes import Judgement, Label

PAPER_JUDGE = "GPT-4"
RESPONSES_FILE = "responses.jsonl"
JUDGEMENTS_FILE = "judgements.jsonl"


@dataclasses.dataclass(frozen=True)
class FollowBenchConfig:
    """``source``: a folder with ``<category>_constraints.json`` files or the URL of upstream's ``data`` folder.
    ``limit``: first N examples per category (0 = all). ``responses_file``: "" = generate greedily with the engine;
    else a JSONL with ``category``, ``example_id``, ``level``, ``response`` (e.g. a previous run's responses.jsonl).
    ``judge``: sampling of the judge (default one greedy vote); its ``templates_file`` may name a JSON with keys
    "constraint"/"whole" overriding our judge prompts. ``judge_name``: the judge model, shown in every report.
    ``categories``: the constraint categories scored. ``levels``: the constraint levels scored (1-5).
    ``max_new_tokens``: actor token budget per response. ``seed``: the sampling seed. ``label``: names the actor in
    summaries and plots."""

    source: str = DEFAULT_SOURCE
    categories: tuple[str, ...] = CATEGORIES
    levels: tuple[int, ...] = LEVELS
    limit: int = 0
    responses_file: str = ""
    max_new_tokens: int = 1024
    seed: int = 0
    judge: JudgeConfig = JudgeConfig(k=1, temperature=0.0)
    judge_name: str = ""
    label: str = ""

    def __post_init__(self):
        object.__setattr__(self, "categories", tuple(self.categories))
        object.__setattr__(self, "levels", tuple(self.levels))
        bad = [c for c in self.categories if c not in CATEGORIES]
        if bad or not self.categories:
            raise ValueError(
                f"FollowBenchConfig.categories: unknown or empty {bad or []}; choose from {list(CATEGORIES)}"
            )
        if not self.levels or any(lv not in LEVELS for lv in self.levels):
            raise ValueError(
                f"FollowBenchConfig.levels must be a non-empty subset of {list(LEVELS)}, got {self.levels}"
            )
        if not isinstance(self.limit, int) or self.limit < 0:
            raise ValueError(f"FollowBenchConfig.limit must be an int >= 0, got {self.limit!r}")
        gen.SamplingParams(max_new_tokens=self.max_new_tokens)

    def templates(self) -> JudgeTemplates:
        return JudgeTemplates.from_file(self.judge.templates_file) if self.judge.templates_file else JudgeTemplates()


def followbench_metrics(rows: Sequence[tuple[str, int, Sequence[Label | None]]]) -> dict[str, Any]:
    """SSR and HSR from (category, level, check labels) rows, one row per response.

    SSR at level n = mean over responses of #Yes checks / #checks; HSR = mean of "all checks Yes"; a None label (tie
    or no valid vote) counts as not satisfied. ``ssr_avg``/``hsr_avg`` = mean over the levels present. Also per
    category × level SSR and the number of unresolved checks.
    """
    soft, hard = defaultdict(list), defaultdict(list)
    soft_cat: dict[tuple[str, int], list[float]] = defaultdict(list)
    unresolved = checks = 0
    for category, level, labels in rows:
        if not labels:
            raise ValueError(f"followbench_metrics: a {category} level-{level} response has no checks")
        s = sum(lab == "yes" for lab in labels) / len(labels)
        soft[level].append(s)
        hard[level].append(float(all(lab == "yes" for lab in labels)))
        soft_cat[(category, level)].append(s)
        unresolved += sum(lab is None for lab in labels)
        checks += len(labels)
    levels = sorted(soft)
    metrics: dict[str, float | None] = {}
    for name, table in (("ssr", soft), ("hsr", hard)):
        per = {lv: sum(table[lv]) / len(table[lv]) for lv in levels}
        metrics.update({f"{name}_level_{lv}": per[lv] for lv in levels})
        metrics[f"{name}_avg"] = sum(per.values()) / len(per) if per else None
    per_category: dict[str, dict[str, float]] = defaultdict(dict)
    for (category, level), values in sorted(soft_cat.items()):
        per_category[category][str(level)] = sum(values) / len(values)
    return {
        "metrics": metrics,
        "per_category_ssr": dict(per_category),
        "responses_per_level": {str(lv): len(soft[lv]) for lv in levels},
        "checks": checks,
        "unresolved_checks": unresolved,
    }


def generate_responses(engine: gen.Generator, records: Sequence[Record], settings: FollowBenchConfig) -> list[dict]:
    """Greedy answers (one user turn, chat template) as response records, in record order."""
    sampling = gen.SamplingParams(max_new_tokens=settings.max_new_tokens, temperature=0.0)
    outputs = gen.generate(
        engine,
        [actor_messages(r.instruction) for r in records],
        n=1,
        sampling=sampling,
        seed=gen.derive_seed(settings.seed, "followbench-actor"),
    )
    return [
        {
            "category": r.category,
            "example_id": r.example_id,
            "level": r.level,
            "instruction": r.instruction,
            "response": c.text,
            "finish_reason": c.finish_reason,
        }
        for r, (c,) in zip(records, outputs)
    ]


def read_responses(path: str, records: Sequence[Record]) -> list[str]:
    """The response to each record from a JSONL keyed by (category, example_id, level); every record needs one."""
    if not os.path.isfile(path):
        raise ValueError(f"FollowBench responses file not found: {path}")
    found: dict[tuple, str] = {}
    for i, row in enumerate(files.read_jsonl(path, required=("category", "example_id", "level", "response")), 1):
        if not isinstance(row["response"], str):
            raise ValueError(f"{path}: record {i}: field 'response' must be a string")
        found[(row["category"], row["example_id"], row["level"])] = row["response"]
    missing = [r for r in records if (r.category, r.example_id, r.level) not in found]
    if missing:
        m = missing[0]
        raise ValueError(
            f"{path}: {len(missing)} of {len(records)} FollowBench records have no response; first "
            f"missing: category={m.category} example_id={m.example_id} level={m.level}"
        )
    return [found[(r.category, r.example_id, r.level)] for r in records]


def judge_checks(
    engine: gen.Generator, checks: Sequence[Check], responses: Sequence[str], settings: FollowBenchConfig
) -> list[Judgement]:
    """Every check judged with k votes in one engine call, parsed with the SPaR rules; in check order."""
    templates = settings.templates()
    requests = [[{"role": "user", "content": templates.render(c, r)}] for c, r in zip(checks, responses)]
    outputs = gen.generate(
        engine,
        requests,
        n=settings.judge.k,
        sampling=settings.judge.sampling(),
        seed=gen.derive_seed(settings.judge.seed, "followbench-judge"),
    )
    return [Judgement.from_texts([c.text for c in completions]) for completions in outputs]


def judge_note(judge_name: str) -> str | None:
    """The comparability note for a judge: None for a GPT-4 model (the papers' judge), else a sentence."""
    if judge_name.strip().lower().replace(" ", "-").startswith(PAPER_JUDGE.lower()):
        return None
    return (
        f"Judge is {judge_name}, not {PAPER_JUDGE} as in the FollowBench and SPaR papers: these SSR/HSR numbers "
        "are not comparable with the papers' (compare runs judged by the same model only)."
    )


def render_markdown(summary: dict[str, Any]) -> str:
    m, levels = summary["metrics"], [int(lv) for lv in summary["responses_per_level"]]
    title = "FollowBench" + (f" — {summary['label']}" if summary["label"] else "")
    judge = summary["settings"]["judge"]
    head = ["", *[f"L{lv}" for lv in levels], "avg"]
    rows = [
        [name.upper(), *[pct(m[f"{name}_level_{lv}"]) for lv in levels], pct(m[f"{name}_avg"])]
        for name in ("ssr", "hsr")
    ]
    cat_rows = [
        [c, *[pct(per.get(str(lv))) for lv in levels], pct(sum(per.values()) / len(per))]
        for c, per in summary["per_category_ssr"].items()
    ]
    lines = [
        f"# {title}",
        "",
        f"**Judge: {summary['judge']}** (k = {judge['k']} vote(s) at temperature {judge['temperature']}; our "
        "judge prompts)." + (f" **Note:** {summary['note']}" if summary.get("note") else ""),
        "",
        *markdown_table(head, rows),
        "",
        "## SSR per category",
        "",
        *markdown_table(head, cat_rows),
        "",
        f"{sum(summary['responses_per_level'].values())} responses, {summary['checks']} checks "
        f"({summary['unresolved_checks']} unresolved: tie or no valid vote, counted as not satisfied); "
        f"votes {summary['votes']}, invalid {summary['invalid_votes']}.",
    ]
    return "\n".join(lines) + "\n"


def run(
    engine: gen.Generator | None,
    settings: FollowBenchConfig,
    out_dir: str | os.PathLike,
    *,
    judge_engine: gen.Generator | None = None,
) -> dict[str, Any]:
    """Answers (or reads) the level 1–5 responses with ``engine``, judges them with ``judge_engine`` (default:
    ``engine`` itself), writes responses.jsonl, judgements.jsonl, summary.json and report.md; returns the summary."""
    if judge_engine is None and engine is None:
        raise ValueError("FollowBench run: no judge engine (pass judge_engine or engine)")
    records = load_followbench(settings.source, settings.categories, settings.limit)
    per_record = build_checks(records, settings.levels)
    evaluated = [checks[0].record for checks in per_record]
    if not evaluated:
        raise ValueError(f"FollowBench: no records at levels {list(settings.levels)} in {settings.source}")
    names = [(f"{r.category}/{r.example_id}/level {r.level}", r.instruction) for r in evaluated]
    with gen.prompt_source(names, settings.source):
        if settings.responses_file:
            responses = read_responses(settings.responses_file, evaluated)
            finish = None
        else:
            if engine is None:
                raise ValueError("FollowBench run: no engine to generate with and no responses_file to judge")
            generated = generate_responses(engine, evaluated, settings)
            files.write_jsonl(os.path.join(out_dir, RESPONSES_FILE), generated)
            responses = [g["response"] for g in generated]
            finish = dict(Counter(g["finish_reason"] for g in generated))
        flat = [(c, resp) for checks, resp in zip(per_record, responses) for c in checks]
        judgements = judge_checks(judge_engine or engine, [c for c, _ in flat], [r for _, r in flat], settings)
    rows, out_records, pos = [], [], 0
    for checks, resp in zip(per_record, responses):
        js = judgements[pos : pos + len(checks)]
        pos += len(checks)
        r = checks[0].record
        rows.append((r.category, r.level, [j.label for j in js]))
        out_records.append(
            {
                "category": r.category,
                "example_id": r.example_id,
                "level": r.level,
                "response": resp,
                "checks": [{"constraint": c.index, "judgement": j.to_dict()} for c, j in zip(checks, js)],
            }
        )
    files.write_jsonl(os.path.join(out_dir, JUDGEMENTS_FILE), out_records)
    stats = followbench_metrics(rows)
    name = settings.judge_name or ("the evaluated model itself" if judge_engine is None else "unnamed judge model")
    summary = base_summary(
        "followbench",
        settings.label,
        stats.pop("metrics"),
        settings,
        judge=name,
        note=judge_note(name),
        source=settings.source,
        finish_reasons=finish,
        **stats,
        **{k: v for k, v in vote_counts(judgements).items() if k in ("votes", "invalid_votes")},
    )
    write_summary(out_dir, summary, render_markdown(summary))
    return summary
