"""The README and docs/ stay navigable: every relative link or image names an existing file (and, for a markdown
target with ``#anchor``, an existing heading), the README fits on a front page, and its test command is the one CI
runs."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")  # links and images
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: pathlib.Path) -> set[str]:
    text = FENCE.sub("", path.read_text())
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*$", text, re.M)}


def links(path: pathlib.Path) -> list[tuple[int, str]]:
    text = path.read_text()
    out = []
    for fence in FENCE.finditer(text):  # blank out code blocks, keeping line numbers
        text = text[: fence.start()] + re.sub(r"[^\n]", " ", fence.group(0)) + text[fence.end() :]
    for m in LINK.finditer(text):
        out.append((text.count("\n", 0, m.start()) + 1, m.group(1)))
    return out


def test_slug_follows_github():
    assert slug("Stage 0: initial SFT") == "stage-0-initial-sft"
    assert slug("Quick start (LLaMA-3-8B on a v5p-8)") == "quick-start-llama-3-8b-on-a-v5p-8"
    assert slug("Compile time, IFEval scoring, tests") == "compile-time-ifeval-scoring-tests"


def broken_links(page: pathlib.Path) -> list[str]:
    broken = []
    for line, target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            broken.append(f"{page.name}:{line}: {target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{page.name}:{line}: {target} (no heading #{anchor})")
    return broken


def test_the_check_finds_broken_links(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## A section\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#a-section) [web](https://example.com/x) ![img](missing.png)\n"
        "```\n[in code](nowhere.md)\n```\n"
        "[gone](nowhere.md)\n[bad anchor](other.md#no-such)\n[self](#here)\n\n## Here\n"
    )
    assert broken_links(page) == [
        "page.md:1: missing.png (no such file)",
        "page.md:5: nowhere.md (no such file)",
        "page.md:6: other.md#no-such (no heading #no-such)",
    ]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    broken = broken_links(page)
    assert not broken, "\n".join(broken)


def test_docs_index_lists_every_page():
    index = (ROOT / "docs" / "index.md").read_text()
    missing = [p.name for p in PAGES[1:] if p.name != "index.md" and f"({p.name})" not in index]
    assert not missing, f"docs/index.md does not link {missing}"


def test_readme_is_a_front_page():
    assert (ROOT / "README.md").stat().st_size <= 12288


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"^```bash\n(.*?)\n```", readme, re.S | re.M)
    script = (ROOT / ".ci" / "run").read_text().splitlines()
    ci = [line for line in script if line and not line.startswith(("#", "set ", "cd "))]
    assert len(ci) == 1, ci
    assert blocks[1] == ci[0], "README's second command differs from .ci/run's"


def test_results_page_shows_the_committed_results_table():
    """docs/results.md shows the study's table as committed in results/smollm2_spar/summary.md, and its plot."""
    summary = (ROOT / "results" / "smollm2_spar" / "summary.md").read_text()
    table = next(block for block in summary.split("\n\n") if block.startswith("| row | prompt strict"))
    page = (ROOT / "docs" / "results.md").read_text()
    assert table in page, "docs/results.md's table differs from results/smollm2_spar/summary.md's: copy it over"
    assert "](../results/smollm2_spar/ifeval.png)" in page
