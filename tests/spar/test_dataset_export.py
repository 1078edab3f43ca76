"""Training data others can load: Parquet copies read back by `datasets`, and LLaMA-Factory's dataset_info.json."""

import json
import os

import pytest
from test_trees_html import scripted_tree

from spar_jax import files
from spar_jax.spar.data import dpo_pairs, refine_examples
from spar_jax.spar.dataset_export import export_directory


def _sharegpt_check(messages, tags, ranking):
    """LLaMA-Factory's sharegpt conversion rules: an optional system turn, then user/assistant turns alternating,
    starting with the user; a preference prompt ends with a user turn (odd length), an SFT chat with the assistant."""
    if messages and messages[0][tags["role_tag"]] == tags["system_tag"]:
        messages = messages[1:]
    assert messages, "empty conversation"
    for i, m in enumerate(messages):
        expected = tags["user_tag"] if i % 2 == 0 else tags["assistant_tag"]
        assert m[tags["role_tag"]] == expected, (i, m)
        assert isinstance(m[tags["content_tag"]], str)
    assert len(messages) % 2 == (1 if ranking else 0)


@pytest.fixture
def data_dir(tmp_path):
    trees = [scripted_tree()]
    directory = tmp_path / "iter_1" / "data"
    files.write_jsonl(directory / "dpo.jsonl", dpo_pairs(trees))
    files.write_jsonl(directory / "refiner_sft.jsonl", refine_examples(trees))
    files.write_jsonl(directory / "empty.jsonl", [])
    return directory


def test_parquet_copies_load_back_with_datasets(data_dir):
    import datasets

    export_directory(str(data_dir))
    assert not os.path.exists(data_dir / "empty.parquet")
    for name in ("dpo", "refiner_sft"):
        records = list(files.read_jsonl(data_dir / f"{name}.jsonl"))
        loaded = datasets.load_dataset("parquet", data_files=str(data_dir / f"{name}.parquet"), split="train")
        assert len(loaded) == len(records) == 1
        row = loaded[0]
        assert {k: row[k] for k in records[0]} == records[0]
    dpo = datasets.load_dataset("parquet", data_files=str(data_dir / "dpo.parquet"), split="train")[0]
    assert dpo["chosen_message"] == {"role": "assistant", "content": "<<Title>> the quick red fox jumps"}
    assert dpo["rejected_message"]["content"].startswith("the quick brown fox")


def test_dataset_info_json_is_llama_factory_layout(data_dir):
    import datasets

    export_directory(str(data_dir))
    info = json.load(open(data_dir / "dataset_info.json"))
    assert sorted(info) == ["dpo", "refiner_sft"]
    assert info["dpo"] == {
        "file_name": "dpo.parquet",
        "formatting": "sharegpt",
        "ranking": True,
        "columns": {"messages": "prompt", "chosen": "chosen_message", "rejected": "rejected_message"},
        "tags": {
            "role_tag": "role",
            "content_tag": "content",
            "user_tag": "user",
            "assistant_tag": "assistant",
            "system_tag": "system",
        },
    }
    assert info["refiner_sft"]["columns"] == {"messages": "messages"} and "ranking" not in info["refiner_sft"]
    for name, entry in info.items():  # what LLaMA-Factory does with the entry: load file_name, map columns
        rows = datasets.load_dataset("parquet", data_files=str(data_dir / entry["file_name"]), split="train")
        cols, tags, ranking = entry["columns"], entry["tags"], entry.get("ranking", False)
        for row in rows:
            _sharegpt_check(row[cols["messages"]], tags, ranking)
            if ranking:
                for key in ("chosen", "rejected"):
                    message = row[cols[key]]
                    assert message[tags["role_tag"]] == tags["assistant_tag"] and message[tags["content_tag"]]


def test_export_keeps_an_up_to_date_parquet_and_redoes_a_stale_one(data_dir):
    export_directory(str(data_dir))
    parquet = data_dir / "dpo.parquet"
    before = os.path.getmtime(parquet)
    export_directory(str(data_dir))
    assert os.path.getmtime(parquet) == before
    os.utime(parquet, (before - 100, before - 100))
    export_directory(str(data_dir))
    assert os.path.getmtime(parquet) > before - 100
