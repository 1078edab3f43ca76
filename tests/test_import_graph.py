"""Packages flow one way: the import graph of spar_jax's top-level packages and modules has no cycle.

Every import counts, function-local ones included (a local import is still a dependency, only a hidden one);
imports under ``if TYPE_CHECKING:`` do not, as they never run. ``python tests/test_import_graph.py`` prints the graph.
"""

from __future__ import annotations

import ast
import collections
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1] / "spar_jax"
GROUND = {"files", "parallel", "progress", "fingerprint", "resumable"}  # modules every package may use


def _is_type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (
        isinstance(test, ast.Name)
        and test.id == "TYPE_CHECKING"
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _imports(tree: ast.AST):
    """Every Import / ImportFrom node, skipping the bodies of ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        children = list(ast.iter_child_nodes(node))
        if _is_type_checking(node):
            children = [c for c in children if c not in node.body]
        stack.extend(children)


def _unit(dotted: str, root: pathlib.Path) -> str | None:
    """``spar_jax.X.Y`` -> ``X`` when X is a top-level package or module of spar_jax, else None."""
    parts = dotted.split(".")
    if parts[0] != "spar_jax" or len(parts) < 2:
        return None
    name = parts[1]
    return name if (root / name).is_dir() or (root / f"{name}.py").is_file() else None


def import_graph(root: pathlib.Path = ROOT) -> dict[str, dict[str, set[str]]]:
    """{importing unit: {imported unit: the importing files}} between distinct top-level units of spar_jax."""
    graph: dict[str, dict[str, set[str]]] = collections.defaultdict(lambda: collections.defaultdict(set))
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        parts = list(rel.parts)
        package = parts[:-1]  # the package a relative import starts from
        src = parts[1]
        for node in _imports(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = package[: len(package) - node.level + 1] if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                targets = [module] + [f"{module}.{a.name}" for a in node.names]
            for target in targets:
                dst = _unit(target, root)
                if dst and dst != src:
                    graph[src][dst].add(str(path.relative_to(root.parent)))
    return graph


def cycles(graph) -> list[list[str]]:
    """The strongly connected components with more than one unit (Tarjan), each sorted."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(set(graph) | {w for edges in graph.values() for w in edges}):
        if v not in index:
            visit(v)
    return out


def render(graph) -> str:
    return "\n".join(f"{src} -> {', '.join(sorted(graph[src]))}" for src in sorted(graph))


def _explain(graph, component: list[str]) -> str:
    lines = [f"cycle between {', '.join(component)}:"]
    for src in component:
        for dst in component:
            if dst in graph.get(src, {}):
                lines.append(f"  {src} -> {dst} in {', '.join(sorted(graph[src][dst]))}")
    return "\n".join(lines)


def test_no_cycles_between_packages():
    graph = import_graph()
    found = cycles(graph)
    assert not found, "\n".join(_explain(graph, c) for c in found)


def test_spar_and_eval_never_import_each_other():
    graph = import_graph()
    assert "eval" not in graph.get("spar", {}), dict(graph["spar"])["eval"]
    assert "spar" not in graph.get("eval", {}), dict(graph["eval"])["spar"]


def test_ground_floor_packages_import_only_ground_modules():
    """The IFEval checker and the judge protocol sit below the loop and the evaluations: each uses only the
    ground-floor modules (and the judge the checker nothing of it)."""
    graph = import_graph()
    assert set(graph.get("ifeval", {})) <= GROUND, dict(graph["ifeval"])
    assert set(graph.get("judge", {})) <= GROUND, dict(graph["judge"])
    for unit in GROUND:
        assert set(graph.get(unit, {})) <= GROUND, (unit, dict(graph[unit]))


def test_config_has_no_function_local_imports():
    """config.py builds itself from top-level imports only: a local import would hide a dependency (or a cycle)."""
    tree = ast.parse((ROOT / "config.py").read_text())
    local = [
        f"config.py:{node.lineno}"
        for fn in ast.walk(tree)
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
        for node in ast.walk(fn)
        if isinstance(node, (ast.Import, ast.ImportFrom))
    ]
    assert not local, f"function-local imports in config.py: {local}"


def test_finds_a_planted_cycle(tmp_path):
    """The checker itself: a two-package cycle through a function-local import is found, a TYPE_CHECKING one not."""
    pkg = tmp_path / "spar_jax"
    for name, body in {
        "a/__init__.py": "def f():\n    from spar_jax.b import x\n",
        "b/__init__.py": "from spar_jax import a\nx = 1\n",
        "c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from spar_jax import d\n",
        "d.py": "from . import c\n",
    }.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(body)
    graph = import_graph(pkg)
    assert cycles(graph) == [["a", "b"]]
    assert dict(graph["d"]) == {"c": {"spar_jax/d.py"}}


if __name__ == "__main__":
    g = import_graph()
    print(render(g))
    sys.exit(1 if cycles(g) else 0)
