"""What the loop publishes after every iteration: Parquet copies and LLaMA-Factory ``dataset_info.json`` of the
training data, the trees page (``iter_N/search/trees.html``), the report (report.md, metrics.jsonl, TensorBoard,
plot), the optional W&B scalars and the optional Hub push. Every step is idempotent, so a resumed loop may repeat
it; files derived from a stage's output are rewritten only when older than it, so a finished stage's directory is
never touched again."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from spar_jax import progress

if TYPE_CHECKING:  # the loop is driven by the run config; config.py builds on spar, not the reverse
    from spar_jax.config import RunConfig


def after_iteration(cfg: RunConfig, it: int) -> dict:
    """Publish iterations 0..``it`` of the run in ``cfg.workdir``; returns the report summary."""
    from spar_jax.spar import dataset_export, hub_push, report, trees_html, wandb_log

    for i in range(0, it + 1):
        data = os.path.join(cfg.workdir, f"iter_{i}", "bootstrap" if i == 0 else "data")
        if os.path.isdir(data) and _stale(os.path.join(data, "dataset_info.json"), _jsonl(data)):
            dataset_export.export_directory(data)
        directory = os.path.join(cfg.workdir, f"iter_{i}")
        sources = [os.path.join(directory, "search", "DONE.json"), os.path.join(directory, "data", "dpo.jsonl")]
        if i and _stale(os.path.join(directory, "search", "trees.html"), sources):
            trees_html.write_page(directory, f"SPaR refinement trees, iteration {i}")
    summary = report.write_report(cfg.workdir, it)
    wandb_log.log_rows(cfg.workdir, cfg.logging.wandb_project, summary["iterations"], cfg.raw)
    hub_push.push_iteration(cfg, it, summary["iterations"])
    progress.line(f"iteration {it}: report written to {summary['report']}")
    return summary


def _jsonl(directory: str) -> list[str]:
    return [os.path.join(directory, n) for n in os.listdir(directory) if n.endswith(".jsonl")]


def _stale(target: str, sources: list[str]) -> bool:
    """True when ``target`` is missing or older than an existing source."""
    times = [os.path.getmtime(s) for s in sources if os.path.exists(s)]
    if not times:
        return False
    return not os.path.exists(target) or os.path.getmtime(target) < max(times)
