"""Hub ids in: models and SFT data named org/name[@revision] load from a hub cache laid out in a temp dir, offline."""

import json
import os

import jax
import numpy as np
import pytest
from flax import nnx

from spar_jax.models import hub

from tiny_checkpoints import copy_demo_tokenizer, write_checkpoint

SHA = "0123456789abcdef0123456789abcdef01234567"
SHA2 = "fedcba9876543210fedcba9876543210fedcba98"


def _repo(cache, kind, repo_id, commits):
    """The hub cache layout huggingface_hub reads: {kind}s--org--name/refs/<ref> = commit; snapshots/<commit>/..."""
    root = cache / f"{kind}s--{repo_id.replace('/', '--')}"
    for ref, (commit, _) in commits.items():
        (root / "refs").mkdir(parents=True, exist_ok=True)
        (root / "refs" / ref).write_text(commit)
    return {commit: root / "snapshots" / commit for commit, _ in commits.values()}


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    snaps = _repo(cache, "model", "tinyorg/tiny", {"main": (SHA, None), "v2": (SHA2, None)})
    for seed, (commit, directory) in enumerate(snaps.items()):
        write_checkpoint(
            directory, "llama", seed=seed, vocab_size=49152, bos_token_id=1, eos_token_id=2, pad_token_id=2
        )
        copy_demo_tokenizer(directory)
    data = _repo(cache, "dataset", "tinyorg/sft", {"main": (SHA, None)})[SHA]
    data.mkdir(parents=True)
    (data / "train.jsonl").write_text(
        json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}) + "\n"
    )
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", "hf_SECRETTOKENVALUE")
    return cache, snaps


def _params(model):
    return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def test_a_model_in_the_hub_cache_loads_offline_by_id_and_revision(hub_cache):
    from spar_jax.models import from_pretrained, load_tokenizer

    _, snaps = hub_cache
    by_id = _params(from_pretrained("tinyorg/tiny"))
    local = _params(from_pretrained(str(snaps[SHA])))
    jax.tree.map(np.testing.assert_array_equal, by_id, local)
    jax.tree.map(
        np.testing.assert_array_equal,
        _params(from_pretrained("tinyorg/tiny@v2")),
        _params(from_pretrained(str(snaps[SHA2]))),
    )
    from spar_jax.models.tokenizer import resolve_checkpoint

    assert resolve_checkpoint(f"tinyorg/tiny@{SHA2}") == resolve_checkpoint("tinyorg/tiny@v2") == str(snaps[SHA2])
    assert load_tokenizer("tinyorg/tiny").encode("hello world") == load_tokenizer(str(snaps[SHA])).encode("hello world")


def test_an_uncached_id_offline_fails_in_one_line_without_the_token(hub_cache):
    from spar_jax.models.tokenizer import resolve_checkpoint

    with pytest.raises(FileNotFoundError) as e:
        resolve_checkpoint("tinyorg/absent@main")
    assert str(e.value) == "tinyorg/absent@main: hub model not in the local hub cache and HF_HUB_OFFLINE is set"
    assert "SECRET" not in str(e.value)
    with pytest.raises(FileNotFoundError, match="not a checkpoint directory, .gguf file or hub id"):
        resolve_checkpoint("no/such/dir")


def test_ids_and_local_paths_are_told_apart(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert hub.is_hub_id("meta-llama/Meta-Llama-3-8B-Instruct") and hub.is_hub_id("org/name@v1.0")
    assert hub.split_ref("org/name@refs/pr/1") == ("org/name", "refs/pr/1")
    assert not hub.is_hub_id("runs/demo/iter_1/actor/hf") and not hub.is_hub_id("model.gguf")
    os.makedirs("org/name")
    assert not hub.is_hub_id("org/name")  # an existing local directory wins


def test_initial_sft_data_by_hub_dataset_id(hub_cache):
    from spar_jax import main
    from spar_jax.config import default_config, parse

    c = default_config()
    c.spar.initial_sft_actor = "tinyorg/sft"
    cfg = main._resolve_hub_data(parse(c))
    assert cfg.spar.initial_sft_actor == str(
        hub_cache[0] / "datasets--tinyorg--sft" / "snapshots" / SHA / "train.jsonl"
    )
    assert cfg.raw["spar"]["initial_sft_actor"] == "tinyorg/sft"  # the record keeps the id


def test_process_zero_downloads_while_the_others_wait(monkeypatch):
    import huggingface_hub

    from spar_jax import parallel

    for rank in (0, 1):
        events = []
        monkeypatch.setattr(jax, "process_index", lambda: rank)
        monkeypatch.setattr(parallel, "sync_processes", lambda name: events.append(("barrier", name)))
        monkeypatch.setattr(
            huggingface_hub, "snapshot_download", lambda repo, **kw: events.append(("download", repo)) or "/x"
        )
        assert hub.snapshot("org/name") == "/x"
        first, second = ("barrier", "hub:org/name:first"), ("barrier", "hub:org/name:rest")
        download = ("download", "org/name")
        assert events == ([download, first, second] if rank == 0 else [first, download, second])
