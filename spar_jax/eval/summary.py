"""The JSON summary and Markdown report every evaluation writes, and the helpers to build them.

A summary is a JSON object with at least ``eval`` (the evaluation's name), ``label`` (the checkpoint or SPaR
iteration it describes, for plots) and ``metrics`` (a flat ``{name: fraction in [0, 1] or None}``); everything
else is evaluation-specific detail. ``plots.py`` reads ``label`` and ``metrics`` only.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from spar_jax import files

SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.md"


def pct(x: float | None, digits: int = 2) -> str:
    """A fraction as a percentage string; "–" for None (an undefined metric)."""
    return "–" if x is None else f"{100 * x:.{digits}f}"


def ratio(num: int, den: int) -> float | None:
    """num / den, or None when den is 0 (so an empty slice never reads as 0 %)."""
    return num / den if den else None


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, numeric_from: int = 1) -> list[str]:
    """Markdown table lines; columns from ``numeric_from`` on are right-aligned."""
    align = ["---" if i < numeric_from else "---:" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"markdown_table: row {row!r} has {len(row)} cells for {len(headers)} headers")
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return lines


def settings_dict(settings: Any) -> dict[str, Any]:
    """A frozen settings dataclass as JSON-ready data (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(settings)))


def base_summary(name: str, label: str, metrics: Mapping[str, float | None], settings: Any, **extra) -> dict:
    """The common head of every summary: eval name, label, metrics, settings, then ``extra``."""
    return {"eval": name, "label": label, "metrics": dict(metrics), "settings": settings_dict(settings), **extra}


def write_summary(out_dir: str | os.PathLike, summary: Mapping[str, Any], markdown: str) -> dict[str, Path]:
    """Writes ``summary.json`` and ``report.md`` into ``out_dir`` (created if needed), each atomically."""
    if "metrics" not in summary or "eval" not in summary:
        raise ValueError("write_summary: a summary needs the keys 'eval' and 'metrics'")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"summary": out / SUMMARY_FILE, "markdown": out / REPORT_FILE}
    files.write_text(paths["markdown"], markdown if markdown.endswith("\n") else markdown + "\n")
    files.write_json(paths["summary"], dict(summary))
    return paths


def load_summary(path: str | os.PathLike) -> dict[str, Any]:
    """A summary from ``path`` (a summary.json, or a directory holding one); checks ``metrics`` is a flat dict."""
    path = Path(path)
    if path.is_dir():
        path = path / SUMMARY_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ValueError(f"{path}: cannot read summary: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None
    metrics = data.get("metrics") if isinstance(data, dict) else None
    if not isinstance(metrics, dict):
        raise ValueError(f"{path}: not an evaluation summary (no 'metrics' object)")
    bad = [k for k, v in metrics.items() if v is not None and not isinstance(v, (int, float))]
    if bad:
        raise ValueError(f"{path}: metric {bad[0]!r} is not a number")
    data.setdefault("label", path.parent.name)
    return data
