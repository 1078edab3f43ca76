"""The study's committed results: per-row IFEval responses and metrics, paired bootstrap intervals against the
starting actor, the loop's own statistics per iteration, a markdown summary and a plot.

Layout written into ``results_dir``::

    <row>/responses.jsonl   one {"prompt", "response"} line per IFEval prompt (Google's input_response_data layout)
    <row>/summary.json      the four metrics and their average, with intervals; the change against `base`
    summary.md, ifeval.png  every row; judge statistics, pairs, tree success and wall time per iteration

Everything is recomputed from the workdir's evaluation directories, so rerunning the writer after each evaluation
keeps the results current and a row's numbers can be re-scored by any IFEval scorer from its responses.
"""

from __future__ import annotations

import json
import os
from typing import Any

from spar_jax import files, ifeval
from spar_jax.ifeval.paired import METRICS, bootstrap, components, paired_bootstrap

# row -> (loop run directory under the study workdir, evaluation directory inside it)
ROWS: dict[str, tuple[str, str]] = {
    "base": ("spar", "iter_0/eval"),
    "iter1": ("spar", "iter_1/eval"),
    "iter2": ("spar", "iter_2/eval"),
    "iter3": ("spar", "iter_3/eval"),
    "no_tree_iter1": ("spar", "iter_1/ablation_no_tree/eval"),
    "no_refine_iter1": ("spar", "iter_1/ablation_no_refine/eval"),
    "rules_iter1": ("rules", "iter_1/eval"),
    "rules_iter2": ("rules", "iter_2/eval"),
    "rules_iter3": ("rules", "iter_3/eval"),
}
LOOP_STEPS = ("bootstrap", "sft_refiner", "mine", "search", "data", "actor", "refiner", "eval")


def _read_json(path: str) -> dict | None:
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def available_rows(workdir: str) -> dict[str, str]:
    """{row: IFEval responses file} for the rows whose IFEval evaluation has finished."""
    out = {}
    for row, (run, sub) in ROWS.items():
        directory = os.path.join(workdir, run, sub)
        path = os.path.join(directory, "ifeval", "responses.jsonl")
        if os.path.exists(os.path.join(directory, "DONE.json")) and os.path.exists(path):
            out[row] = path
    return out


def loop_statistics(workdir: str, run: str, iteration: int, sub: str = "") -> dict[str, Any]:
    """The loop's own numbers for one iteration (from its steps' DONE records): the judge's Yes rate and agreement
    with the checker on the actor's samples, tree success (overall and per depth), pairs and how many of them the
    checker calls right, held-out accuracy, and wall time per step (seconds)."""
    base = os.path.join(workdir, run, f"iter_{iteration}")
    own = ("search", "data", "actor", "eval")  # an ablation's own steps; it shares the iteration's mining
    info = {
        s: _read_json(os.path.join(base, sub if s in own else "", s, "DONE.json"))
        for s in LOOP_STEPS
        if not (sub and s not in own + ("mine",))
    }
    info = {s: info.get(s) for s in LOOP_STEPS}
    row: dict[str, Any] = {}
    if info["mine"]:
        m = info["mine"]
        row.update(
            responses=m["responses"],
            roots=m["prompts_with_negative"],
            truncated=m.get("truncated"),
            truncated_negatives=m.get("truncated_negatives"),
        )
        row.update(
            {
                f"judge_{k}": v
                for k, v in (m.get("checker") or {}).items()
                if k in ("judge_yes_rate", "checker_pass_rate", "checker_agreement")
            }
        )
        row.update(_yes_given_checker("judge", m.get("checker")))
    if info["search"]:
        t = info["search"]
        row.update(trees=t["trees"], tree_success=t["success_rate"], success_at_depth=t.get("success_rate_at_depth"))
        checker = t.get("checker") or {}
        row.update(
            roots_fail_checker=checker.get("roots_failing"), passing_nodes_pass=checker.get("passing_nodes_pass")
        )
        row.update(_yes_given_checker("node_judge", checker.get("nodes")))
    if info["data"]:
        d = info["data"]
        row.update(
            pairs=d["pairs"],
            equal_pairs_dropped=d.get("equal_pairs_dropped"),
            right_pairs=(d.get("checker") or {}).get("right_pairs"),
            refiner_examples=d["refiner_examples"],
        )
    if info["eval"] and info["eval"].get("heldout"):
        row["heldout_average"] = info["eval"]["heldout"].get("average")
    row["seconds"] = {s: i["seconds"] for s, i in info.items() if i and "seconds" in i}
    return row


def _yes_given_checker(prefix: str, confusion: dict | None) -> dict[str, float | None]:
    """The judge's Yes rate among answers the checker passes and among those it fails (from `judge_vs_checker`'s
    confusion counts). Agreement alone hides a judge that always says No when most answers fail."""
    if not confusion or "yes_pass" not in confusion:
        return {}
    passed, failed = confusion["yes_pass"] + confusion["no_pass"], confusion["yes_fail"] + confusion["no_fail"]
    return {
        f"{prefix}_yes_on_pass": confusion["yes_pass"] / passed if passed else None,
        f"{prefix}_yes_on_fail": confusion["yes_fail"] / failed if failed else None,
    }


def _fmt(x: Any, pct: bool = True) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{100 * x:.1f}" if pct else f"{x:.2f}"
    return str(x)


def _interval(d: dict[str, float], signed: bool = False) -> str:
    v = f"{100 * d['delta']:+.1f}" if signed else f"{100 * d['delta']:.1f}"
    return (
        f"{v} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"
        if signed
        else f"{v} [{100 * d['low']:.1f}, {100 * d['high']:.1f}]"
    )


def answers_changed(base: list[str], other: list[str]) -> float:
    """Share of prompts whose answer differs from ``base``'s (whitespace-stripped): what training moved at all."""
    if len(base) != len(other):
        raise ValueError(f"answers_changed: {len(base)} base answers but {len(other)} others")
    return sum(a.strip() != b.strip() for a, b in zip(base, other)) / max(1, len(base))


def render(rows: dict[str, dict], loops: dict[str, dict], title: str, notes: str = "") -> str:
    lines = [
        f"# {title}",
        "",
        "IFEval, all prompts, greedy, scored by spar_jax's checker. Values in points (%);",
        "intervals are 95% percentile bootstrap over prompts (10,000 resamples); Δ is paired against `base`.",
        "",
        "| row | prompt strict | prompt loose | inst. strict | inst. loose | average [95% CI] "
        "| Δ average vs base [95% CI] |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        m = r["metrics"]
        delta = _interval(r["vs_base"]["average"], signed=True) if r.get("vs_base") else "–"
        lines.append(
            f"| {name} | "
            + " | ".join(_fmt(m[k]) for k in METRICS)
            + f" | {_interval(r['interval']['average'])} | {delta} |"
        )
    lines += ["", "| row | answers changed vs base | mean words per answer |", "|---|---|---|"]
    for name, r in rows.items():
        changed = _fmt(r["changed_vs_base"]) if "changed_vs_base" in r else "–"
        lines.append(f"| {name} | {changed} | {_fmt(r.get('mean_words'), False)} |")
    keys = [
        "judge_judge_yes_rate",
        "judge_checker_pass_rate",
        "judge_checker_agreement",
        "judge_yes_on_pass",
        "judge_yes_on_fail",
        "node_judge_yes_on_pass",
        "node_judge_yes_on_fail",
        "roots",
        "truncated_negatives",
        "tree_success",
        "passing_nodes_pass",
        "pairs",
        "equal_pairs_dropped",
        "right_pairs",
        "refiner_examples",
        "heldout_average",
    ]
    labels = {
        "judge_judge_yes_rate": "judge Yes rate (actor samples)",
        "judge_checker_pass_rate": "checker pass rate",
        "judge_checker_agreement": "judge agrees with checker",
        "judge_yes_on_pass": "judge Yes rate, answers the checker passes",
        "judge_yes_on_fail": "judge Yes rate, answers the checker fails",
        "node_judge_yes_on_pass": "judge Yes rate, refinements the checker passes",
        "node_judge_yes_on_fail": "judge Yes rate, refinements the checker fails",
        "roots": "tree roots",
        "truncated_negatives": "No samples cut by the length limit (not roots)",
        "tree_success": "tree success",
        "passing_nodes_pass": "passing refinements the checker passes",
        "pairs": "DPO pairs",
        "equal_pairs_dropped": "pairs dropped (equal texts)",
        "right_pairs": "pairs right by the checker",
        "refiner_examples": "refiner SFT examples",
        "heldout_average": "held-out generated prompts, average",
    }
    if loops:
        lines += [
            "",
            "## The loop, per iteration",
            "",
            "| | " + " | ".join(loops) + " |",
            "|---|" + "---|" * len(loops),
        ]
        for k in keys:
            pct = k not in ("roots", "truncated_negatives", "pairs", "equal_pairs_dropped", "refiner_examples")
            lines.append(f"| {labels[k]} | " + " | ".join(_fmt(loops[c].get(k), pct) for c in loops) + " |")
        lines.append(
            "| success rate at depth 1/2/3 | "
            + " | ".join(
                "/".join(_fmt(v) for v in (loops[c].get("success_at_depth") or {}).values()) or "–" for c in loops
            )
            + " |"
        )
        steps = sorted({s for c in loops for s in loops[c]["seconds"]}, key=LOOP_STEPS.index)
        for s in steps:
            lines.append(
                f"| wall time: {s} (min) | "
                + " | ".join(
                    _fmt(loops[c]["seconds"].get(s, 0) / 60 if s in loops[c]["seconds"] else None, False) for c in loops
                )
                + " |"
            )
    if notes:
        lines += ["", notes.strip()]
    return "\n".join(lines) + "\n"


def plot(rows: dict[str, dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    series = {
        "SPaR (refiner judges)": ["base", "iter1", "iter2", "iter3"],
        "judge = IFEval checker": ["base", "rules_iter1", "rules_iter2", "rules_iter3"],
    }
    for label, names in series.items():
        pts = [(i, rows[n]["interval"]["average"]) for i, n in enumerate(names) if n in rows]
        if len(pts) > (1 if label.startswith("judge") else 0):
            ax.errorbar(
                [p[0] + (0.05 if label.startswith("judge") else 0) for p in pts],
                [100 * p[1]["delta"] for p in pts],
                yerr=[
                    [100 * (p[1]["delta"] - p[1]["low"]) for p in pts],
                    [100 * (p[1]["high"] - p[1]["delta"]) for p in pts],
                ],
                marker="o",
                capsize=3,
                label=label,
            )
    for offset, name in ((-0.1, "no_tree_iter1"), (0.1, "no_refine_iter1")):
        if name in rows:
            d = rows[name]["interval"]["average"]
            ax.errorbar(
                [1 + offset],
                [100 * d["delta"]],
                yerr=[[100 * (d["delta"] - d["low"])], [100 * (d["high"] - d["delta"])]],
                marker="s",
                capsize=3,
                linestyle="none",
                label=name,
            )
    ax.set_xticks([0, 1, 2, 3])
    ax.set_xlabel("iteration (0 = base)")
    ax.set_ylabel("IFEval average (%), 95% CI")
    ax.set_title("IFEval average per iteration")
    ax.legend(fontsize=8)
    fig.tight_layout()
    if files.is_writer():
        tmp = path + ".tmp.png"
        fig.savefig(tmp, dpi=100)
        os.replace(tmp, path)
    plt.close(fig)


def write_results(
    workdir: str,
    results_dir: str,
    ifeval_source: str,
    *,
    title: str = "SPaR study",
    iterations: int = 3,
    n_resamples: int = 10_000,
) -> dict[str, Any]:
    """Regenerates ``results_dir`` from the finished rows of the study in ``workdir``; returns the summary."""
    prompts = ifeval.load_ifeval_prompts(ifeval_source)
    rows: dict[str, dict] = {}
    comps, answers = {}, {}
    for name, path in available_rows(workdir).items():
        report = ifeval.score_responses(prompts, path)
        comps[name] = components(report.results)
        answers[name] = [r.response for r in report.results]
        rows[name] = {
            "metrics": dict(report.metrics),
            "num_prompts": report.num_prompts,
            "interval": bootstrap(comps[name], n_resamples=n_resamples),
        }
        files.write_jsonl(
            os.path.join(results_dir, name, "responses.jsonl"),
            [{"prompt": r.prompt, "response": r.response} for r in report.results],
        )
    for name in rows:
        rows[name]["mean_words"] = sum(len(a.split()) for a in answers[name]) / max(1, len(answers[name]))
        if name != "base" and "base" in comps:
            rows[name]["vs_base"] = paired_bootstrap(comps["base"], comps[name], n_resamples=n_resamples)
            rows[name]["changed_vs_base"] = answers_changed(answers["base"], answers[name])
        files.write_json(os.path.join(results_dir, name, "summary.json"), {"row": name, **rows[name]})
    loops = {}
    for run, prefix in (("spar", "iter"), ("rules", "rules_iter")):
        for it in range(1, iterations + 1):
            stats = loop_statistics(workdir, run, it)
            if len(stats) > 1:
                loops[f"{prefix}{it}"] = stats
        if run == "spar":
            for ab in ("no_tree", "no_refine"):
                stats = loop_statistics(workdir, run, 1, f"ablation_{ab}")
                if stats.get("pairs") is not None:
                    loops[f"{ab}_iter1"] = stats
    stage0 = loop_statistics(workdir, "spar", 0)
    if stage0["seconds"]:
        loops = {"stage0": stage0, **loops}
    notes_path = os.path.join(results_dir, "notes.md")
    notes = open(notes_path, encoding="utf-8").read() if os.path.exists(notes_path) else ""
    files.write_text(os.path.join(results_dir, "summary.md"), render(rows, loops, title, notes))
    files.write_json(os.path.join(results_dir, "summary.json"), {"rows": rows, "loop": loops})
    if rows:
        plot(rows, os.path.join(results_dir, "ifeval.png"))
    return {"rows": rows, "loop": loops, "results_dir": results_dir}
