"""Hub out: after an iteration the actor and refiner exports (with a model card) and the data go to the Hub;
tested against a local fake of HfApi whose calls are checked against the real HfApi's signatures (no network)."""

import inspect
import json
import os

import huggingface_hub
import pytest

from spar_jax import files
from spar_jax.config import default_config, parse
from spar_jax.spar import publish


class FakeApi:
    """Records create_repo / upload_folder / upload_file / create_tag calls and the files an upload would send."""

    calls: list = []

    def _record(self, name, *args, **kwargs):
        inspect.signature(getattr(huggingface_hub.HfApi, name)).bind(self, *args, **kwargs)  # the real API accepts it
        FakeApi.calls.append((name, args, kwargs))

    def create_repo(self, *args, **kwargs):
        self._record("create_repo", *args, **kwargs)

    def create_tag(self, *args, **kwargs):
        self._record("create_tag", *args, **kwargs)

    def upload_file(self, *args, **kwargs):
        self._record("upload_file", *args, **kwargs)

    def upload_folder(self, *args, **kwargs):
        self._record("upload_folder", *args, **kwargs)
        folder = kwargs["folder_path"]
        FakeApi.calls[-1][2]["files"] = {
            f: open(os.path.join(folder, f)).read()
            for f in sorted(os.listdir(folder))
            if f.endswith((".md", ".json", ".jsonl"))
        }


@pytest.fixture
def run(tmp_path, monkeypatch):
    FakeApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    workdir = tmp_path / "w"
    for role in ("actor", "refiner"):
        files.write_json(workdir / "iter_1" / role / "hf" / "config.json", {"model_type": "llama"})
        files.write_json(
            workdir / "iter_1" / role / "DONE.json",
            {"steps": 3, "loss": 0.5, "seconds": 1.0, "checkpoint": str(workdir / "iter_1" / role / "hf")},
        )
    for it, score in ((0, 0.4), (1, 0.6)):
        files.write_json(workdir / f"iter_{it}" / "eval" / "DONE.json", {"heldout": {"average": score}, "seconds": 1.0})
    files.write_jsonl(
        workdir / "iter_1" / "data" / "dpo.jsonl",
        [
            {
                "prompt": [{"role": "user", "content": "p"}],
                "chosen": [{"role": "assistant", "content": "a"}],
                "rejected": [{"role": "assistant", "content": "b"}],
                "prompt_id": "1",
                "depth": 1,
            }
        ],
    )
    c = default_config()
    c.workdir = str(workdir)
    c.actor.path = "tinyorg/base@v1"
    c.spar.iterations = 2
    return c, workdir


def test_no_push_by_default(run):
    c, _ = run
    publish.after_iteration(parse(c), 1)
    assert FakeApi.calls == []


def test_push_models_with_cards_and_data_once(run):
    c, workdir = run
    c.hub.push_to = "me/spar-run"
    c.hub.push_data = True
    cfg = parse(c)
    publish.after_iteration(cfg, 1)
    names = [(n, a[0] if a else k.get("repo_id")) for n, a, k in FakeApi.calls]
    assert names == [
        ("create_repo", "me/spar-run-actor"),
        ("upload_folder", "me/spar-run-actor"),
        ("create_tag", "me/spar-run-actor"),
        ("create_repo", "me/spar-run-refiner"),
        ("upload_folder", "me/spar-run-refiner"),
        ("create_tag", "me/spar-run-refiner"),
        ("create_repo", "me/spar-run-data"),
        ("upload_folder", "me/spar-run-data"),
        ("upload_file", "me/spar-run-data"),
    ]
    actor_upload = FakeApi.calls[1][2]
    assert actor_upload["commit_message"] == "SPaR iteration 1" and actor_upload["repo_type"] == "model"
    assert FakeApi.calls[2][2]["tag"] == "iter-1"
    assert FakeApi.calls[0][2]["private"] is True
    card = actor_upload["files"]["README.md"]
    assert "config.json" in actor_upload["files"]
    assert card.startswith("---\nlibrary_name: transformers\n") and "base_model: tinyorg/base\n" in card
    assert "# SPaR actor, iteration 1" in card and "- base model: `tinyorg/base@v1`" in card
    assert "| metric | iter 0 | iter 1 |" in card and "| heldout_average | 0.400 | 0.600 |" in card
    config = json.loads(card.split("```json\n", 1)[1].split("\n```", 1)[0])
    assert config == json.loads(json.dumps(cfg.raw, default=str))
    data_upload = FakeApi.calls[7][2]
    assert data_upload["repo_type"] == "dataset" and data_upload["path_in_repo"] == "iter_1"
    assert {"dpo.jsonl", "dataset_info.json"} <= set(data_upload["files"])
    assert os.path.exists(workdir / "iter_1" / "data" / "dpo.parquet")  # exported before the push
    FakeApi.calls = []
    publish.after_iteration(cfg, 1)  # a resumed loop does not push the same iteration again
    assert FakeApi.calls == []


def test_push_to_must_be_a_repo_prefix(run):
    c, _ = run
    c.hub.push_to = "not a repo"
    with pytest.raises(ValueError, match="config key 'hub.push_to' must be a repo prefix 'org/name'"):
        parse(c)
