"""What the loop publishes after every iteration: Parquet copies and LLaMA-Factory ``dataset_info.json`` of the
training data, the trees page (``iter_N/search/trees.html``), the report (report.md, metrics.jsonl, TensorBoard,
plot), the optional W&B scalars and the optional Hub push. Every step is idempotent, so a resumed loop may repeat
it."""

from __future__ import annotations

import os

from spar_jax import progress
from spar_jax.config import RunConfig


def after_iteration(cfg: RunConfig, it: int) -> dict:
    """Publish iterations 0..``it`` of the run in ``cfg.workdir``; returns the report summary."""
    from spar_jax.spar import dataset_export, hub_push, report, trees_html, wandb_log

    dataset_export.export_directory(os.path.join(cfg.workdir, "iter_0", "bootstrap"))
    for i in range(1, it + 1):
        dataset_export.export_directory(os.path.join(cfg.workdir, f"iter_{i}", "data"))
        directory = os.path.join(cfg.workdir, f"iter_{i}")
        if i == it or not os.path.exists(os.path.join(directory, "search", "trees.html")):
            trees_html.write_page(directory, f"SPaR refinement trees, iteration {i}")
    summary = report.write_report(cfg.workdir, it)
    wandb_log.log_rows(cfg.workdir, cfg.logging.wandb_project, summary["iterations"], cfg.raw)
    hub_push.push_iteration(cfg, it, summary["iterations"])
    progress.line(f"iteration {it}: report written to {summary['report']}")
    return summary
