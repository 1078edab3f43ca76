"""Writing an IFEval :class:`Report` to disk: summary.json, results.jsonl, report.md."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any, Mapping

from .scoring import Report


def _atomic_write(path: Path, text: str) -> None:
    """Writes a temp file next to ``path`` (normal umask permissions), then renames."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def render_markdown(report: Report, title: str = "IFEval") -> str:
    """Markdown with the headline table and per-type / per-category tables (percent)."""
    m = report.metrics
    lines = [
        f"# {title}",
        "",
        f"{report.num_prompts} prompts, {report.num_instructions} instructions. "
        f"Average of the four accuracies (headline): **{_pct(m['average'])}**",
        "",
        "| level | strict | loose |",
        "| --- | ---: | ---: |",
        f"| prompt | {_pct(m['prompt_level_strict'])} | {_pct(m['prompt_level_loose'])} |",
        f"| instruction | {_pct(m['instruction_level_strict'])} | {_pct(m['instruction_level_loose'])} |",
    ]
    for heading, table in (("Per instruction type", report.per_instruction), ("Per category", report.per_category)):
        lines += ["", f"## {heading}", "", "| instruction | count | strict | loose |", "| --- | ---: | ---: | ---: |"]
        lines += [
            f"| {name} | {row['count']} | {_pct(row['strict'])} | {_pct(row['loose'])} |" for name, row in table.items()
        ]
    return "\n".join(lines) + "\n"


def write_report(
    report: Report, out_dir: str | os.PathLike, extra: Mapping[str, Any] | None = None, title: str = "IFEval"
) -> dict[str, Path]:
    """Writes ``summary.json`` (aggregates plus ``extra``, e.g. model and data
    sources), ``results.jsonl`` (one line per prompt) and ``report.md`` into
    ``out_dir`` (created if needed), each atomically. Returns the three paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = report.summary()
    if extra:
        summary = {**dict(extra), **summary}
    paths = {"summary": out / "summary.json", "results": out / "results.jsonl", "markdown": out / "report.md"}
    _atomic_write(paths["results"], "".join(json.dumps(r.as_json(), ensure_ascii=False) + "\n" for r in report.results))
    _atomic_write(paths["markdown"], render_markdown(report, title))
    _atomic_write(paths["summary"], json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return paths
