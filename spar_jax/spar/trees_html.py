"""The trees page: one static HTML file per iteration (``iter_N/search/trees.html``) showing what the refiner did.

Every tree is a collapsible tree (``<details>``) of its nodes: the answer, a word-level diff against the parent, the
judge votes and the value V, the critique; the path to the passing node is highlighted. Below, each DPO pair shows
the rejected response against the chosen one as a diff. No server, no scripts, no external assets: the page opens
from disk. Everything the models wrote is HTML-escaped.
"""

from __future__ import annotations

import difflib
import html
import os
import re
from typing import Any, Sequence

from spar_jax import files
from spar_jax.spar.tree_search import Node, TreeRecord

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 70em; }
details { margin: 0.3em 0 0.3em 1.2em; }
details.tree { border: 1px solid #ccc; border-radius: 4px; padding: 0.3em 0.6em; margin-left: 0; }
details.tree.pass > summary { color: #176117; }
summary { cursor: pointer; }
.node > summary { font-family: ui-monospace, monospace; font-size: 12px; }
.node.path > summary { background: #fff3b0; font-weight: bold; }
.node.pass > summary::after { content: "  PASS"; color: #176117; }
pre { white-space: pre-wrap; background: #f7f7f7; padding: 0.4em; margin: 0.2em 0; }
.critique { color: #555; }
ins { background: #c8f0c8; text-decoration: none; }
del { background: #f6c6c6; }
.label { font-size: 11px; text-transform: uppercase; color: #888; margin-top: 0.4em; }
"""

_TOKEN = re.compile(r"\s+|[^\s]+")


def word_diff(old: str, new: str) -> str:
    """HTML of ``new`` against ``old`` word by word: removed words in ``<del>``, added ones in ``<ins>`` (escaped)."""
    a, b = _TOKEN.findall(old), _TOKEN.findall(new)
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(html.escape("".join(a[i1:i2])))
            continue
        if i2 > i1:
            out.append(f"<del>{html.escape(''.join(a[i1:i2]))}</del>")
        if j2 > j1:
            out.append(f"<ins>{html.escape(''.join(b[j1:j2]))}</ins>")
    return "".join(out)


def _votes(node: Node) -> str:
    v = node.judgement.votes
    invalid = sum(x is None for x in v)
    value = "–" if node.value is None else f"{node.value:.2f}"
    return (
        f"votes yes {v.count('yes')} / no {v.count('no')}"
        + (f" / invalid {invalid}" if invalid else "")
        + f" · V={value}"
    )


def _node(tree: TreeRecord, node: Node, children: dict[int, list[Node]], path: set[int]) -> str:
    classes = ["node"] + (["path"] if node.index in path else [])
    classes += ["pass"] if node.index == tree.success_index else []
    kind = "root" if node.parent is None else f"depth {node.depth}"
    status = "" if node.status in ("ok", "root") else f" · {node.status}"
    summary = f"#{node.index} {kind} · {_votes(node)}{status}"
    parts = [
        f'<details class="{" ".join(classes)}" id="{html.escape(tree.prompt_id)}-{node.index}" open>',
        f"<summary>{html.escape(summary)}</summary>",
        '<div class="label">answer</div>',
        f"<pre>{html.escape(node.response)}</pre>",
    ]
    if node.parent is not None:
        parts += [
            '<div class="label">diff against its parent</div>',
            f'<pre class="diff">{word_diff(tree.nodes[node.parent].response, node.response)}</pre>',
        ]
    if node.critique:
        parts += ['<div class="label">critique</div>', f'<pre class="critique">{html.escape(node.critique)}</pre>']
    parts += [_node(tree, c, children, path) for c in children.get(node.index, [])]
    parts.append("</details>")
    return "\n".join(parts)


def render_tree(tree: TreeRecord) -> str:
    """One tree as nested ``<details>``; the root-to-passing-node path highlighted (class ``path``)."""
    children: dict[int, list[Node]] = {}
    for n in tree.nodes[1:]:
        children.setdefault(n.parent, []).append(n)
    path = set(tree.path(tree.success_index)) if tree.success else set()
    outcome = f"passes at depth {tree.success_depth}" if tree.success else "no passing refinement"
    head = f"{tree.prompt_id} · {outcome} · {len(tree.nodes)} nodes · {tree.strategy}"
    return "\n".join(
        [
            f'<details class="tree{" pass" if tree.success else ""}">',
            f"<summary>{html.escape(head)}</summary>",
            '<div class="label">instruction</div>',
            f"<pre>{html.escape(tree.instruction)}</pre>",
            _node(tree, tree.root, children, path),
            "</details>",
        ]
    )


def _content(messages: Any) -> str:
    if isinstance(messages, list):
        return "\n".join(str(m.get("content", "")) for m in messages)
    return str(messages)


def render_pair(pair: dict[str, Any]) -> str:
    """A DPO pair: the prompt, then the rejected response turned into the chosen one as a word diff."""
    head = f"{pair.get('prompt_id', '')} · depth {pair.get('depth', '?')}"
    return "\n".join(
        [
            '<details class="pair">',
            f"<summary>{html.escape(head)}</summary>",
            '<div class="label">prompt</div>',
            f"<pre>{html.escape(_content(pair['prompt']))}</pre>",
            '<div class="label">rejected → chosen</div>',
            f'<pre class="diff">{word_diff(_content(pair["rejected"]), _content(pair["chosen"]))}</pre>',
            "</details>",
        ]
    )


def render(trees: Sequence[TreeRecord], pairs: Sequence[dict[str, Any]], title: str) -> str:
    """The whole page (self-contained HTML)."""
    passed = sum(t.success for t in trees)
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{html.escape(title)}</title>",
            f"<style>{_CSS}</style></head><body>",
            f"<h1>{html.escape(title)}</h1>",
            f"<p>{len(trees)} trees, {passed} with a passing refinement; {len(pairs)} DPO pairs. "
            "Highlighted nodes: the path from the actor's response to the passing refinement. "
            "<ins>added</ins> / <del>removed</del> words are against the parent node.</p>",
            "<h2>Trees</h2>",
            *[render_tree(t) for t in trees],
            "<h2>DPO pairs</h2>",
            *[render_pair(p) for p in pairs],
            "</body></html>",
        ]
    )


def write_page(iteration_dir: str, title: str) -> str | None:
    """Write ``search/trees.html`` of one iteration directory from its search shards and ``data/dpo.jsonl``;
    None when the search has not finished."""
    search = os.path.join(iteration_dir, "search")
    if not os.path.exists(os.path.join(search, "DONE.json")):
        return None
    shards = [n for n in sorted(os.listdir(search)) if n.startswith("shard_") and n.endswith(".jsonl")]
    trees = [TreeRecord.from_dict(r) for name in shards for r in files.read_jsonl(os.path.join(search, name))]
    dpo = os.path.join(iteration_dir, "data", "dpo.jsonl")
    pairs = list(files.read_jsonl(dpo)) if os.path.exists(dpo) else []
    path = os.path.join(search, "trees.html")
    files.write_text(path, render(trees, pairs, title))
    return path
