"""Metrics across checkpoints or SPaR iterations, from evaluation summaries, into one PNG.

``python -m spar_jax.eval.plots --out curve.png [--metrics a,b] run0/ifeval run1/ifeval ...`` (each argument a
summary.json or the folder holding it; x axis in argument order, ticks from each summary's ``label``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from spar_jax import files
from spar_jax.eval.summary import load_summary


def metric_series(
    summaries: Sequence[Mapping[str, Any]], metrics: Sequence[str] | None = None
) -> dict[str, list[float | None]]:
    """{metric: one value per summary (None where missing or undefined)}; default metrics: every numeric metric in
    any summary, in first-seen order."""
    if metrics is None:
        metrics = list(
            dict.fromkeys(k for s in summaries for k, v in s["metrics"].items() if isinstance(v, (int, float)))
        )
    series = {m: [s["metrics"].get(m) for s in summaries] for m in metrics}
    empty = [m for m, values in series.items() if all(v is None for v in values)]
    if empty:
        raise ValueError(f"plot: metric {empty[0]!r} is in none of the {len(summaries)} summaries")
    return series


def plot_metrics(
    summaries: Sequence[Mapping[str, Any] | str | os.PathLike],
    path: str | os.PathLike,
    *,
    metrics: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """Plots ``metrics`` (as percentages) of each summary (a dict or a summary path) against its position and writes
    a PNG to ``path`` (atomically). ``labels`` overrides the x tick labels (default: each summary's ``label``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loaded = [s if isinstance(s, Mapping) else load_summary(s) for s in summaries]
    if not loaded:
        raise ValueError("plot: no summaries given")
    if labels is not None and len(labels) != len(loaded):
        raise ValueError(f"plot: {len(labels)} labels for {len(loaded)} summaries")
    ticks = list(labels) if labels is not None else [s.get("label") or str(i) for i, s in enumerate(loaded)]
    series = metric_series(loaded, metrics)
    x = list(range(len(loaded)))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(x) + 3), 4.5))
    try:
        for name, values in series.items():
            points = [(i, 100 * v) for i, v in zip(x, values) if v is not None]
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
        ax.set_xticks(x, ticks, rotation=30 if max(len(t) for t in ticks) > 10 else 0, ha="right")
        ax.set_ylabel("%")
        evals = sorted({str(s.get("eval", "")) for s in loaded} - {""})
        ax.set_title(title or " / ".join(evals) or "evaluation")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        fig.tight_layout()
        path = Path(path)
        with files.atomic_open(path, "wb") as f:
            fig.savefig(f, format="png", dpi=120)
    finally:
        plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m spar_jax.eval.plots", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("summaries", nargs="+", help="summary.json files or folders holding one")
    parser.add_argument("--out", required=True, help="PNG path to write")
    parser.add_argument("--metrics", default="", help="comma-separated metric names (default: all)")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    try:
        plot_metrics(
            args.summaries, args.out, metrics=[m for m in args.metrics.split(",") if m] or None, title=args.title
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
