"""Convert the authors' judge and refine prompts into a ``spar.templates_file`` JSON.

Usage::

    python -m spar_jax.tools.import_templates PATH_TO_THEIR_REPO [--out templates.json]

``PATH_TO_THEIR_REPO`` is a local clone of the authors' public repository (thu-coai/SPaR). The prompts are read from
its Python sources with ``ast`` (nothing is imported or executed), so no wording of theirs is stored in spar_jax:

- judge: the module-level string ``judge_template`` in ``src/tasks/prompts.py`` (fallback: the string returned by
  ``build_judge_template`` in ``src/judge.py``). It has two positional fields ``{}``, filled with
  ``.format(prompt, response)``; they become ``{instruction}`` and ``{response}``. The order is read from their own
  ``judge_template.format(a, b)`` calls (the argument whose text names ``response`` is the response); without such
  a call it is (instruction, response).
- refine: the content of the last user message of the list returned by ``build_refine_message`` in
  ``src/tasks/science.py`` (the third chat turn). Their code sends it verbatim, so every brace in it is literal.

Literal braces are escaped (``{{`` / ``}}``) so that ``str.format`` gives back their exact text, and the result is
checked like any templates file (``Templates``: required fields and protocol markers). With these templates the
judge and refine turns spar_jax builds are the text the authors' code sends (tested on a fixture in their layout).
"""

from __future__ import annotations

import argparse
import ast
import string
import sys
from pathlib import Path

from spar_jax import files
from spar_jax.judge.templates import Templates

JUDGE_SOURCES = (
    ("src/tasks/prompts.py", "variable", "judge_template"),
    ("src/judge.py", "function", "build_judge_template"),
)
REFINE_SOURCE = ("src/tasks/science.py", "build_refine_message")
FIELDS = ("instruction", "response")


class ConversionError(ValueError):
    """A prompt could not be found or converted; the message names the file."""


def _parse(path: Path) -> ast.Module:
    try:
        return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except OSError as e:
        raise ConversionError(f"{path}: cannot read ({e.strerror}); is the path a clone of thu-coai/SPaR?") from None
    except SyntaxError as e:
        raise ConversionError(f"{path}:{e.lineno}: not valid Python ({e.msg})") from None


def _const_str(node: ast.AST | None) -> str | None:
    """The value of a string literal, or of literals joined with ``+``; None for anything else."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _const_str(node.left), _const_str(node.right)
        return None if left is None or right is None else left + right
    return None


def _format_base(node: ast.AST | None) -> str | None:
    """``"...".format(...)`` -> the literal; a plain literal -> itself."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
        return _const_str(node.func.value)
    return _const_str(node)


def _functions(tree: ast.Module, name: str) -> list[ast.FunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name]


def _returned(fn: ast.FunctionDef) -> list[ast.AST]:
    return [n.value for n in ast.walk(fn) if isinstance(n, ast.Return) and n.value is not None]


def find_judge(repo: Path) -> tuple[str, Path]:
    """The raw judge template (positional fields) and the file it came from."""
    tried = []
    for rel, kind, name in JUDGE_SOURCES:
        path = repo / rel
        tried.append(f"{rel} ({kind} {name!r})")
        if not path.is_file():
            continue
        tree = _parse(path)
        if kind == "variable":
            for node in tree.body:
                if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
                    text = _const_str(node.value)
                    if text is None:
                        raise ConversionError(f"{path}:{node.lineno}: {name} is not a string literal")
                    return text, path
        else:
            for fn in _functions(tree, name):
                for value in _returned(fn):
                    text = _format_base(value)
                    if text is not None:
                        return text, path
    raise ConversionError(f"{repo}: judge prompt not found; looked for {', '.join(tried)}")


def find_refine(repo: Path) -> tuple[str, Path]:
    """The refine request (the last user turn of ``build_refine_message``) and the file it came from."""
    rel, name = REFINE_SOURCE
    path = repo / rel
    if not path.is_file():
        raise ConversionError(f"{path}: not found (expected {name} there); is the path a clone of thu-coai/SPaR?")
    tree = _parse(path)
    for fn in _functions(tree, name):
        for value in _returned(fn):
            if not isinstance(value, ast.List):
                continue
            users = []
            for item in value.elts:
                if isinstance(item, ast.Dict):
                    d = {_const_str(k): v for k, v in zip(item.keys, item.values) if k is not None}
                    if _const_str(d.get("role")) == "user" and _const_str(d.get("content")) is not None:
                        users.append(_const_str(d["content"]))
            if users:
                return users[-1], path
    raise ConversionError(f"{path}: no function {name} returning a message list with a literal user turn")


def field_order(repo: Path, variable: str = "judge_template") -> tuple[str, str]:
    """(first, second) field names from their ``variable.format(a, b)`` calls under ``src``."""
    for path in sorted((repo / "src").rglob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "format"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == variable
                and len(node.args) == 2
            ):
                first = ast.unparse(node.args[0]).lower()
                return ("response", "instruction") if "response" in first else FIELDS
    return FIELDS


def _escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def convert_positional(template: str, names: tuple[str, ...], where: str) -> str:
    """Positional fields (``{}`` or ``{0}``, ``{1}``) -> ``{names[i]}``; literal text re-escaped."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ConversionError(f"{where}: not a valid format string ({e})") from None
    out, auto = [], 0
    for literal, field, spec, conversion in parts:
        out.append(_escape(literal))
        if field is None:
            continue
        if spec or conversion:
            raise ConversionError(f"{where}: field {{{field}}} has a format spec or conversion; cannot map it")
        if field == "":
            index, auto = auto, auto + 1
        elif field.isdigit():
            index = int(field)
        else:
            raise ConversionError(f"{where}: named field {{{field}}}; expected positional fields only")
        if index >= len(names):
            raise ConversionError(f"{where}: field #{index} but only {len(names)} value(s) are passed")
        out.append("{" + names[index] + "}")
    return "".join(out)


def import_templates(repo: str | Path) -> dict[str, str]:
    """{"judge", "refine"} in our template syntax, validated by ``Templates``."""
    repo = Path(repo)
    if not repo.is_dir():
        raise ConversionError(f"{repo}: not a directory (pass a local clone of thu-coai/SPaR)")
    judge_raw, judge_path = find_judge(repo)
    judge = convert_positional(judge_raw, field_order(repo), str(judge_path))
    if set(f for _, f, _, _ in string.Formatter().parse(judge) if f) != set(FIELDS):
        raise ConversionError(f"{judge_path}: judge prompt must have exactly two fields (instruction, response)")
    refine_raw, refine_path = find_refine(repo)
    result = {"judge": judge, "refine": _escape(refine_raw)}
    try:
        Templates(**result)
    except ValueError as e:
        raise ConversionError(f"{judge_path} / {refine_path}: converted prompts rejected: {e}") from None
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m spar_jax.tools.import_templates", description=__doc__.split("\n")[0]
    )
    parser.add_argument("repo", help="local clone of the authors' repository (thu-coai/SPaR)")
    parser.add_argument("--out", default="templates.json", help="JSON file to write (spar.templates_file)")
    args = parser.parse_args(argv)
    try:
        templates = import_templates(args.repo)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    files.write_json(args.out, templates)
    print(
        f"wrote {args.out}: judge {len(templates['judge'])} chars, refine {len(templates['refine'])} chars; "
        f"set spar.templates_file (and eval judges' templates_file) to it"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
