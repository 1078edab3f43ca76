"""The run report: per-iteration statistics from the steps' DONE records → report.md, metrics.jsonl,
TensorBoard scalars and a PNG plot across iterations. Rewritten whole after every iteration (idempotent), so a
running loop always has a current report."""

from __future__ import annotations

import json
import os
from typing import Any

from spar_jax import files

STEPS = ("bootstrap", "sft_actor", "sft_refiner", "mine", "search", "data", "actor", "refiner", "eval")
SAMPLING_STEPS = ("bootstrap", "mine", "search", "eval")  # their DONE records carry the engines' counters


def _info(workdir: str, it: int, step: str) -> dict | None:
    path = os.path.join(workdir, f"iter_{it}", step, "DONE.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def heldout_splits(workdir: str, it: int) -> dict[str, dict[str, float]]:
    """{split: IFEval metrics} of iteration ``it``'s held-out results, grouped by the prompts' ``split`` label
    ("in_distribution" / "out_of_distribution", set when ``prompts.heldout_types`` reserves types); {} without."""
    from spar_jax.ifeval import PromptResult, Report

    prompts = os.path.join(workdir, "prompts", "heldout.jsonl")
    results = os.path.join(workdir, f"iter_{it}", "eval", "heldout", "results.jsonl")
    if not (os.path.exists(prompts) and os.path.exists(results)):
        return {}
    split_of = {str(p["key"]): p["split"] for p in files.read_jsonl(prompts) if "split" in p}
    groups: dict[str, list] = {}
    for r in files.read_jsonl(results) if split_of else ():
        if str(r["key"]) in split_of:
            groups.setdefault(split_of[str(r["key"])], []).append(
                PromptResult(
                    r["key"],
                    r["prompt"],
                    r["response"],
                    tuple(r["instruction_id_list"]),
                    tuple(r["follow_instruction_list_strict"]),
                    tuple(r["follow_instruction_list_loose"]),
                )
            )
    return {split: dict(Report.from_results(rs).metrics) for split, rs in sorted(groups.items())}


def iteration_row(workdir: str, it: int) -> dict[str, Any]:
    """One flat row of the report for iteration ``it`` (0 = the starting models)."""
    s = {step: _info(workdir, it, step) for step in STEPS}
    row: dict[str, Any] = {"iteration": it}
    if s["mine"]:
        m = s["mine"]
        row.update(
            prompts=m["prompts"],
            responses=m["responses"],
            votes=m["votes"],
            invalid_votes=m["invalid_votes"],
            negatives=m["prompts_with_negative"],
            judge_agreement=m["judge_agreement"],
            labels_yes=m["labels"]["yes"],
            labels_no=m["labels"]["no"],
            labels_tie=m["labels"]["tie"],
        )
    if s["search"]:
        t = s["search"]
        row.update(
            trees=t["trees"],
            successes=t["successes"],
            success_rate=t["success_rate"],
            engine_calls=t["engine_calls"],
            refinements=t["refinements"],
            judgments=t["judgments"],
            main_calls_per_level=t["engine_calls_main_per_level"],
        )
        for depth, rate in t["success_by_depth"].items():
            row[f"success_rate_depth_{depth}"] = rate
    if s["data"]:
        d = s["data"]
        row.update(pairs=d["pairs"], refiner_examples=d["refiner_examples"], edit_similarity=d["edit_similarity"])
        row.update({f"pool_{k}": v for k, v in d["per_pool"].items()})
    if s["bootstrap"]:
        b = s["bootstrap"]
        row.update(
            bootstrap_prompts=b["prompts"],
            bootstrap_failing=b["failing"],
            bootstrap_fixed=b["fixed"],
            bootstrap_refiner_examples=b["refiner_examples"],
            bootstrap_actor_examples=b["actor_examples"],
        )
    for name in ("sft_actor", "sft_refiner", "actor", "refiner"):
        if s[name] and "steps" in s[name]:
            row[f"{name}_steps"] = s[name]["steps"]
            row[f"{name}_loss"] = s[name].get("loss")
    if s["eval"]:
        for split in ("heldout", "ifeval"):
            metrics = s["eval"].get(split) or {}
            row.update({f"{split}_{k}": v for k, v in metrics.items()})
        for split, metrics in heldout_splits(workdir, it).items():
            row.update({f"heldout_{split}_{k}": v for k, v in metrics.items()})
        if s["eval"].get("ifeval_note"):
            row["note"] = s["eval"]["ifeval_note"]
    for step in SAMPLING_STEPS:
        use = (s[step] or {}).get("sampling")
        if use:
            row[f"utilization_{step}"] = use["utilization"]
            row[f"generated_tokens_{step}"] = use["generated_tokens"]
    for step in STEPS:
        if s[step]:
            row[f"seconds_{step}"] = s[step]["seconds"]
    return row


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def scalars(row: dict) -> dict[str, float]:
    """The numeric entries of a report row (what TensorBoard and W&B get), without the iteration itself."""
    return {
        k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "iteration"
    }


def render(rows: list[dict], links: dict[int, str] | None = None) -> str:
    """report.md; ``links`` maps an iteration to its trees page (relative to the workdir)."""
    keys = []
    for r in rows:
        keys.extend(k for k in r if k not in keys and k not in ("iteration", "note"))
    head = "| metric | " + " | ".join(f"iter {r['iteration']}" for r in rows) + " |"
    lines = [
        "# SPaR run report",
        "",
        "Iteration 0 is the starting actor (evaluation only).",
        "",
        head,
        "|---|" + "---|" * len(rows),
    ]
    lines += [f"| {k} | " + " | ".join(_fmt(r.get(k)) for r in rows) + " |" for k in keys]
    total = sum(v for r in rows for k, v in r.items() if k.startswith("seconds_") and v)
    lines += ["", f"Total step wall time: {total:.1f} s.", ""]
    lines += [f"Iteration {r['iteration']}: {r['note']}" for r in rows if r.get("note")]
    if any(k.startswith("heldout_out_of_distribution_") for r in rows for k in r):
        lines += [
            "",
            "Held-out prompts: heldout_in_distribution_* use the training prompts' constraint types and "
            "task stems; heldout_out_of_distribution_* have a main constraint of a type reserved by "
            "prompts.heldout_types, on task stems never used in training; heldout_* is both together.",
        ]
    elif any(k.startswith("heldout_") for r in rows for k in r):
        lines += [
            "",
            "Held-out prompts come from the training prompts' generator (in distribution only); set "
            "prompts.heldout_types for an out-of-distribution split.",
        ]
    if any(k.startswith("utilization_") for r in rows for k in r):
        lines += [
            "",
            "utilization_<step>: generated tokens / decode slot-steps of the step's engines (the share of "
            "decode rows x steps that produced a token; low when rows sit finished while others decode).",
        ]
    if links:
        lines += [
            "",
            "Refinement trees and DPO pairs: "
            + ", ".join(f"[iteration {it}]({path})" for it, path in sorted(links.items()))
            + ".",
        ]
    return "\n".join(lines)


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [
        k
        for k in ("heldout_average", "heldout_prompt_level_strict", "ifeval_average", "success_rate", "judge_agreement")
        if any(r.get(k) is not None for r in rows)
    ]
    fig, ax = plt.subplots(figsize=(6, 4))
    for k in series:
        pts = [(r["iteration"], r[k]) for r in rows if r.get(k) is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=k)
    ax.set_xlabel("SPaR iteration")
    ax.set_ylabel("fraction")
    ax.set_xticks([r["iteration"] for r in rows])
    ax.set_title("SPaR metrics across iterations")
    if series:
        ax.legend(fontsize=8)
    fig.tight_layout()
    with files.atomic_open(path, "wb") as f:  # a unique temp name beside ``path``, renamed over it
        fig.savefig(f, dpi=100, format="png")
    plt.close(fig)


def _write_tensorboard(rows: list[dict], tb_dir: str) -> None:
    """All rows into a fresh event directory swapped in for the old one (no duplicate points across rewrites)."""
    import shutil

    from tensorboardX import SummaryWriter

    tmp = tb_dir + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    writer = SummaryWriter(tmp)
    for r in rows:
        for k, v in scalars(r).items():
            writer.add_scalar(f"spar/{k}", v, r["iteration"])
    writer.close()
    shutil.rmtree(tb_dir, ignore_errors=True)
    os.replace(tmp, tb_dir)


def write_report(workdir: str, iterations: int) -> dict:
    """Write report.md, metrics.jsonl, tensorboard/ and metrics.png for iterations 0..``iterations``."""
    rows = [iteration_row(workdir, it) for it in range(iterations + 1)]
    rows = [r for r in rows if len(r) > 1]
    links = {
        it: f"iter_{it}/search/trees.html"
        for it in range(iterations + 1)
        if os.path.exists(os.path.join(workdir, f"iter_{it}", "search", "trees.html"))
    }
    files.write_text(os.path.join(workdir, "report.md"), render(rows, links))
    files.write_jsonl(os.path.join(workdir, "metrics.jsonl"), rows)
    if files.is_writer():  # the event file and the plot, like every shared file, come from process 0 only
        _write_tensorboard(rows, os.path.join(workdir, "tensorboard"))
        plot(rows, os.path.join(workdir, "metrics.png"))
    return {"iterations": rows, "report": os.path.join(workdir, "report.md")}
