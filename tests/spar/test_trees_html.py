"""The trees page: a scripted tree rendered as nested <details>, word diffs, the passing path, escaped model text."""

import html.parser
import json
import os

from spar_jax import files
from spar_jax.judge.votes import Judgement
from spar_jax.spar import trees_html
from spar_jax.spar.tree_search import Node, TreeRecord

EVIL = "<script>alert('x')</script>"


def _node(index, parent, depth, response, votes, status="ok"):
    texts = [f"critique {index}.{i}: {'fine' if v == 'yes' else 'add a title'} {EVIL}" for i, v in enumerate(votes)]
    return Node(
        index,
        parent,
        depth,
        response,
        None if parent is None else f"raw {response}",
        Judgement(tuple(texts), tuple(votes)),
        "root" if parent is None else status,
        1,
    )


def scripted_tree():
    """root -> (1 fails, 2 fails) ; 2 -> (3 passes, 4 fails): the passing path is 0 -> 2 -> 3."""
    nodes = (
        _node(0, None, 0, f"the quick brown fox {EVIL}", ("no", "no", "yes")),
        _node(1, 0, 1, "the slow brown fox", ("no", "no", "no")),
        _node(2, 0, 1, "<<Title>> the quick brown fox", ("no", "yes", "no")),
        _node(3, 2, 2, "<<Title>> the quick red fox jumps", ("yes", "yes", None)),
        _node(4, 2, 2, "<<Title>> quick", ("yes", "no", "yes"), status="tie"),
    )
    return TreeRecord("p-7", f"Write about a fox & add a title {EVIL}", "bfs", nodes, 3, 2, 4, 0, 12)


class _Tags(html.parser.HTMLParser):
    """Counts tags, collects <details> ids/classes; fails on any <script> tag."""

    def __init__(self):
        super().__init__()
        self.tags, self.details = [], {}

    def handle_starttag(self, tag, attrs):
        assert tag != "script", "model text reached the page unescaped"
        self.tags.append(tag)
        attrs = dict(attrs)
        if tag == "details" and "id" in attrs:
            self.details[attrs["id"]] = attrs["class"].split()


def test_word_diff_marks_removed_and_added_words_and_escapes():
    assert (
        trees_html.word_diff("the quick brown fox", "the quick red fox jumps")
        == "the quick <del>brown</del><ins>red</ins> fox<ins> jumps</ins>"
    )
    assert trees_html.word_diff("a <b>", "a <i>") == "a <del>&lt;b&gt;</del><ins>&lt;i&gt;</ins>"


def test_the_page_shows_every_node_the_passing_path_and_escapes_model_text(tmp_path):
    tree = scripted_tree()
    pair = {
        "prompt": [{"role": "user", "content": tree.instruction}],
        "chosen": [{"role": "assistant", "content": tree.nodes[3].response}],
        "rejected": [{"role": "assistant", "content": tree.root.response}],
        "prompt_id": "p-7",
        "depth": 2,
    }
    page = trees_html.render([tree], [pair], "trees <test>")
    parser = _Tags()
    parser.feed(page)
    assert parser.details == {
        "p-7-0": ["node", "path"],
        "p-7-1": ["node"],
        "p-7-2": ["node", "path"],
        "p-7-3": ["node", "path", "pass"],
        "p-7-4": ["node"],
    }
    # nesting: node 3 and 4 inside node 2, inside the root
    i0, i2, i3, i4, i1 = (page.index(f'id="p-7-{i}"') for i in (0, 2, 3, 4, 1))
    assert i0 < i1 < i2 < i3 < i4
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page and EVIL not in page
    assert "<title>trees &lt;test&gt;</title>" in page
    assert "#3 depth 2 · votes yes 2 / no 0 / invalid 1 · V=1.00" in page
    assert "#4 depth 2 · votes yes 2 / no 1 · V=0.67 · tie" in page
    assert "p-7 · passes at depth 2 · 5 nodes · bfs" in page
    # node 3 against its parent 2; the DPO pair rejected (root) -> chosen (node 3)
    assert "&lt;&lt;Title&gt;&gt; the quick <del>brown</del><ins>red</ins> fox<ins> jumps</ins>" in page
    assert "<ins>&lt;&lt;Title&gt;&gt; </ins>the quick <del>brown</del><ins>red</ins> fox" in page
    assert "critique 2.0: add a title" in page  # the majority-agreeing critique
    assert not any(s in page for s in ("http://", "https://", "<link", "src="))  # no external assets


def test_write_page_reads_the_search_shards_and_dpo_pairs(tmp_path):
    it_dir = tmp_path / "iter_1"
    files.write_jsonl(it_dir / "search" / "shard_00000.jsonl", [scripted_tree().to_dict()])
    assert trees_html.write_page(str(it_dir), "t") is None  # search not finished
    files.write_json(it_dir / "search" / "DONE.json", {"trees": 1})
    files.write_jsonl(it_dir / "data" / "dpo.jsonl", [{"prompt": "x", "chosen": "a b", "rejected": "a c", "depth": 1}])
    path = trees_html.write_page(str(it_dir), "t")
    page = open(path).read()
    assert path == os.path.join(str(it_dir), "search", "trees.html")
    assert 'id="p-7-3"' in page and "a <del>c</del><ins>b</ins>" in page
    assert json.loads(json.dumps(scripted_tree().to_dict()))["path"] == [0, 2, 3]


def test_the_report_links_the_trees_pages(tmp_path):
    from spar_jax.spar import report

    it_dir = tmp_path / "iter_1"
    files.write_jsonl(it_dir / "search" / "shard_00000.jsonl", [scripted_tree().to_dict()])
    files.write_json(
        it_dir / "search" / "DONE.json",
        {
            "trees": 1,
            "successes": 1,
            "success_rate": 1.0,
            "engine_calls": 4,
            "refinements": 4,
            "judgments": 12,
            "engine_calls_main_per_level": 2.0,
            "success_by_depth": {"2": 1.0},
            "seconds": 1.0,
        },
    )
    trees_html.write_page(str(it_dir), "t")
    report.write_report(str(tmp_path), 1)
    text = open(tmp_path / "report.md").read()
    assert "Refinement trees and DPO pairs: [iteration 1](iter_1/search/trees.html)." in text
