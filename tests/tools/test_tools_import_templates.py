"""The template converter on a fake clone in the authors' layout (our own placeholder wording, not theirs)."""

import json
import subprocess
import sys
import textwrap

import pytest

from spar_jax.judge.templates import Templates, judge_messages, parse_judgement, parse_refinement, refine_messages
from spar_jax.tools.import_templates import ConversionError, convert_positional, import_templates, main

JUDGE = (
    "Check the Output against the Prompt.\n\nPrompt: \u201c{}\u201d\n\nOutput: \u201c{}\u201d\n\n"
    'Answer JSON like {{"ok": true}} if you like, then:\nFinal Judgement (does it follow?): (Yes or No)'
)
REFINE = 'Fix the Output. Keep {"style": "same"}.\nRefined Output: [[start]] xxx [[end]]'


def fake_repo(root, *, judge=JUDGE, refine=REFINE, call="judge_template.format(prompt, response)", judge_file=True):
    (root / "src" / "tasks").mkdir(parents=True)
    (root / "src" / "ToT").mkdir()
    if judge_file:
        (root / "src" / "tasks" / "prompts.py").write_text(f"\njudge_template = {judge!r}\n", encoding="utf-8")
    science = f"""
        from tasks.prompts import *

        class SearchTask(object):
            @staticmethod
            def build_refine_message(prompt, response, critique):
                return [
                    {{"role": "user", "content": {call}}},
                    {{"role": "assistant", "content": critique}},
                    {{"role": "user", "content": {refine!r}}}
                ]

            @staticmethod
            def build_judge_message(prompt, response):
                return [{{"role": "user", "content": {call}}}]
    """
    (root / "src" / "tasks" / "science.py").write_text(textwrap.dedent(science), encoding="utf-8")
    return root


def test_converts_fields_and_escapes_literal_braces(tmp_path):
    t = import_templates(fake_repo(tmp_path))
    assert "{instruction}" in t["judge"] and "{response}" in t["judge"]
    assert '{{"ok": true}}' in t["judge"]  # their escaped braces stay escaped
    assert t["refine"] == 'Fix the Output. Keep {{"style": "same"}}.\nRefined Output: [[start]] xxx [[end]]'
    templates = Templates(**t)
    # Rendered through our templates, the turns are exactly what their code sends.
    assert judge_messages("I", "R", templates)[0]["content"] == JUDGE.format("I", "R")
    turns = refine_messages("I", "R", "C", templates)
    assert [m["role"] for m in turns] == ["user", "assistant", "user"]
    assert turns[2]["content"] == REFINE  # sent verbatim by their code: braces literal
    assert parse_judgement("...\nFinal Judgement (does it follow?): No") == "no"
    assert parse_refinement("Reflection.\nRefined Output: [[start]] fixed [[end]]") == "fixed"


def test_field_order_follows_their_format_call(tmp_path):
    t = import_templates(fake_repo(tmp_path, call="judge_template.format(response, prompt)"))
    assert t["judge"].index("{response}") < t["judge"].index("{instruction}")


def test_explicit_indices_and_function_fallback(tmp_path):
    repo = fake_repo(tmp_path, judge_file=False)
    (repo / "src" / "judge.py").write_text(
        "def build_judge_template(prompt, response):\n"
        f"    return {JUDGE.replace('{}', '{0}', 1).replace('{}', '{1}', 1)!r}.format(prompt, response)\n",
        encoding="utf-8",
    )
    assert Templates(**import_templates(repo)).judge.format(instruction="I", response="R") == JUDGE.format("I", "R")


def test_cli_writes_a_templates_file(tmp_path):
    repo, out = fake_repo(tmp_path / "repo"), tmp_path / "t.json"
    proc = subprocess.run(
        [sys.executable, "-m", "spar_jax.tools.import_templates", str(repo), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert Templates.from_file(out).to_dict() == json.loads(out.read_text(encoding="utf-8"))


@pytest.mark.parametrize("kwargs, message", [
    (dict(judge_file=False), r"judge prompt not found; looked for src/tasks/prompts.py"),
    (dict(judge="Prompt: {} Output: {} Extra: {}\nFinal Judgement: Yes or No"), r"prompts.py: field #2"),
    (dict(judge="Prompt: {p}\nFinal Judgement"), r"prompts.py: named field \{p\}"),
    (dict(judge="Prompt: {} Output: {}\nVerdict: Yes or No"), r"protocol marker 'Final Judgement'"),
    (dict(refine="Fix it and put it between markers."), r"protocol marker '\[\[start\]\]'"),
])  # fmt: skip
def test_errors_name_the_file(tmp_path, kwargs, message):
    with pytest.raises(ConversionError, match=message):
        import_templates(fake_repo(tmp_path, **kwargs))


def test_missing_refine_file_and_non_repo(tmp_path, capsys):
    repo = fake_repo(tmp_path / "r")
    (repo / "src" / "tasks" / "science.py").unlink()
    with pytest.raises(ConversionError, match=r"science.py: not found"):
        import_templates(repo)
    assert main([str(tmp_path / "nowhere")]) == 2
    assert "nowhere: not a directory" in capsys.readouterr().err


def test_convert_positional_rejects_format_specs():
    with pytest.raises(ConversionError, match="format spec"):
        convert_positional("{:>10} {}", ("instruction", "response"), "x.py")
