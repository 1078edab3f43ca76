"""Prompt sources: JSONL / JSON files in our, IFEval's and LLaMA-Factory's layouts, with clear errors."""

import json

import pytest

from spar_jax.spar.sources import load_prompts


def test_jsonl_ifeval_layout_keeps_constraints(tmp_path):
    path = tmp_path / "input_data.jsonl"
    path.write_text(
        "".join(
            json.dumps(
                {
                    "key": 1000 + i,
                    "prompt": f"Write {i} lines without commas.",
                    "instruction_id_list": ["punctuation:no_comma"],
                    "kwargs": [{}],
                }
            )
            + "\n"
            for i in range(7)
        )
    )
    prompts = load_prompts(str(path), limit=5)
    assert len(prompts) == 5 and prompts[0]["key"] == 1000
    assert prompts[0]["instruction_id_list"][0] == "punctuation:no_comma"


def test_llama_factory_and_alpaca_layouts(tmp_path):
    path = tmp_path / "release.json"
    path.write_text(
        json.dumps(
            [
                {"conversations": [{"from": "human", "value": "Write a poem."}, {"from": "gpt", "value": "..."}]},
                {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "Name a color."}]},
                {"instruction": "Translate", "input": "bonjour", "output": "hello"},
            ]
        )
    )
    prompts = load_prompts(str(path))
    assert [p["prompt"] for p in prompts] == ["Write a poem.", "Name a color.", "Translate\nbonjour"]
    assert [p["key"] for p in prompts] == [0, 1, 2]


def test_bad_records_name_file_and_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "ok"}\n{"text": "no instruction here"}\n')
    with pytest.raises(ValueError, match=r"p\.jsonl:2: no instruction field 'prompt'"):
        load_prompts(str(path))
    path.write_text('{"prompt": "ok"}\n{"prompt": \n')
    with pytest.raises(ValueError, match=r"p\.jsonl:2: malformed JSON"):
        load_prompts(str(path))
    with pytest.raises(FileNotFoundError, match="prompt file not found"):
        load_prompts(str(tmp_path / "missing.jsonl"))
    path.write_text('{"key": 1, "prompt": "a"}\n{"key": 1, "prompt": "b"}\n')
    with pytest.raises(ValueError, match="keys are not unique"):
        load_prompts(str(path))
