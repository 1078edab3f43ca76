"""Summary writers and the metrics plot."""

import json

import pytest

from spar_jax.eval import plots
from spar_jax.eval.summary import base_summary, load_summary, markdown_table, pct, ratio, write_summary
from spar_jax.judge.settings import JudgeConfig


def test_markdown_table_pct_and_ratio():
    lines = markdown_table(["name", "n", "%"], [["a", 1, pct(0.5)], ["b", 2, pct(None)]])
    assert lines == ["| name | n | % |", "| --- | ---: | ---: |", "| a | 1 | 50.00 |", "| b | 2 | – |"]
    with pytest.raises(ValueError, match="2 cells for 3 headers"):
        markdown_table(["a", "b", "c"], [[1, 2]])
    assert ratio(1, 4) == 0.25 and ratio(3, 0) is None


def test_write_and_load_summary_round_trip(tmp_path):
    summary = base_summary("llmbar", "iter 1", {"overall": 0.625, "natural": None}, JudgeConfig(k=3), votes=12)
    assert summary["settings"]["k"] == 3 and summary["votes"] == 12
    paths = write_summary(tmp_path / "out", summary, "# title")
    assert paths["markdown"].read_text() == "# title\n"
    assert json.loads(paths["summary"].read_text()) == summary
    assert load_summary(tmp_path / "out") == summary  # a folder works as well as the file
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temp files left


def test_load_summary_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"metrics": {"a": "high"}}')
    with pytest.raises(ValueError, match=r"bad.json: metric 'a' is not a number"):
        load_summary(bad)
    bad.write_text('{"eval": "x"}')
    with pytest.raises(ValueError, match="no 'metrics' object"):
        load_summary(bad)
    bad.write_text('{"metrics":\n  {')
    with pytest.raises(ValueError, match=r"bad.json:2: invalid JSON"):
        load_summary(bad)
    with pytest.raises(ValueError, match="cannot read summary"):
        load_summary(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="needs the keys"):
        write_summary(tmp_path, {"label": "x"}, "")


def test_metric_series_fills_missing_with_none_and_rejects_unknown():
    s = [{"metrics": {"a": 0.1, "b": 0.2}}, {"metrics": {"a": 0.3, "c": None}}]
    assert plots.metric_series(s) == {"a": [0.1, 0.3], "b": [0.2, None]}  # "c" is never numeric
    assert plots.metric_series(s, ["b"]) == {"b": [0.2, None]}
    with pytest.raises(ValueError, match="'zzz' is in none of the 2 summaries"):
        plots.metric_series(s, ["zzz"])


def test_plot_writes_a_png_from_summary_files(tmp_path):
    dirs = []
    for it, avg in enumerate((0.30, 0.35, 0.41)):
        d = tmp_path / f"iter_{it}"
        write_summary(
            d,
            base_summary("ifeval", f"iter {it}", {"average": avg, "prompt_level_strict": avg - 0.1}, JudgeConfig()),
            "# x",
        )
        dirs.append(d)
    out = plots.plot_metrics(dirs, tmp_path / "plots" / "ifeval.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    with pytest.raises(ValueError, match="2 labels for 3 summaries"):
        plots.plot_metrics(dirs, tmp_path / "x.png", labels=["a", "b"])
    assert plots.main(["--out", str(tmp_path / "cli.png"), "--metrics", "average", *map(str, dirs)]) == 0
    assert (tmp_path / "cli.png").stat().st_size > 5000
    assert plots.main(["--out", str(tmp_path / "no.png"), "--metrics", "nope", str(dirs[0])]) == 2
    assert not (tmp_path / "no.png").exists()
