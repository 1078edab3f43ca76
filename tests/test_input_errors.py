"""Inputs fail early, naming the place: readers report file:line (decode errors too), an empty prompt source and a
malformed turn are errors, config values are checked at parse time, a torn metrics line is dropped on resume,
save_pretrained creates a missing parent, and the GGUF cache key covers the whole file."""

import json
import logging
import os

import pytest

from spar_jax import files
from spar_jax.config import default_config, parse
from spar_jax.models import gguf
from spar_jax.spar.sources import load_prompts
from spar_jax.training.metrics import _truncate_jsonl
from spar_jax.training.records import iter_records


def test_a_line_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n')
    with pytest.raises(ValueError, match=r"p\.jsonl:2: not UTF-8 text"):
        list(files.read_jsonl(path))
    with pytest.raises(ValueError, match=r"p\.jsonl:2: not UTF-8 text"):
        load_prompts(str(path))
    whole = tmp_path / "d.json"
    whole.write_bytes(b'[\n{"messages": []},\n{"x": "\xff"}\n]')
    with pytest.raises(ValueError, match=r"d\.json:3: not UTF-8 text"):
        list(iter_records(str(whole)))


def test_an_empty_or_unusable_prompt_source_is_an_error(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(ValueError, match=r"empty\.jsonl'?: no prompts"):
        load_prompts(str(empty))
    blank = tmp_path / "blank.jsonl"
    blank.write_text('{"prompt": "   "}\n')
    with pytest.raises(ValueError, match=r"blank\.jsonl:1: 'prompt': the instruction must be a non-empty string"):
        load_prompts(str(blank))


def test_a_malformed_turn_names_the_record(tmp_path):
    path = tmp_path / "chat.jsonl"
    path.write_text(
        json.dumps({"messages": [{"role": "user", "content": "hi"}]})
        + "\n"
        + json.dumps({"messages": ["not a turn"]})
        + "\n"
    )
    with pytest.raises(ValueError, match=r"chat\.jsonl:2: messages\[0\] must be an object"):
        load_prompts(str(path))


@pytest.mark.parametrize("key, value, needle", [
    ("actor.remat", "ful", r"'actor\.remat' is 'ful'; choose one of"),
    ("refiner.param_dtype", "bf16", r"'refiner\.param_dtype' must be"),
    ("engine.max_length", -1, r"'engine\.max_length' must be >= 0"),
    ("mesh.shape", (1, 0, 1), r"'mesh\.shape' entries must be >= 1 or -1"),
    ("on_change", "overwrite", r"'on_change' must be 'stop' or 'rerun'"),
])  # fmt: skip
def test_config_values_are_checked_when_read(key, value, needle):
    c = default_config()
    section, _, leaf = key.rpartition(".")
    (c[section] if section else c)[leaf] = value
    with pytest.raises(ValueError, match=needle):
        parse(c)


def test_a_torn_last_metrics_line_is_dropped_on_resume(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "loss": 0.4}\n{"step": 3, "lo')
    with caplog.at_level(logging.WARNING):
        _truncate_jsonl(str(path), 2)
    assert path.read_text() == '{"step": 1, "loss": 0.5}\n{"step": 2, "loss": 0.4}\n'
    assert "metrics.jsonl:3: torn last line dropped" in caplog.text
    path.write_text('{"step": 1}\n{"st\n{"step": 2}\n')
    with pytest.raises(ValueError, match=r"metrics\.jsonl:2: malformed metrics row"):
        _truncate_jsonl(str(path), 2)


def test_save_pretrained_creates_a_missing_parent_and_clears_a_killed_save(tmp_path):
    from spar_jax.models import from_pretrained, save_pretrained

    from tiny_checkpoints import write_checkpoint

    model = from_pretrained(write_checkpoint(tmp_path / "src", "llama", seed=1))
    target = tmp_path / "a" / "b" / "hf"
    save_pretrained(model, target)
    assert (target / "config.json").exists()
    stale = tmp_path / "a" / "b" / ".tmp-save-hf-killed"
    stale.mkdir()
    (stale / "model-00001.safetensors").write_bytes(b"\0" * 64)
    save_pretrained(model, target)
    assert not stale.exists() and sorted(os.listdir(tmp_path / "a" / "b")) == ["hf"]


def test_the_gguf_cache_key_covers_the_whole_file_and_is_computed_once(tmp_path):
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    head = b"GGUF" + b"\0" * (2 << 20)
    a.write_bytes(head + b"1")
    b.write_bytes(head + b"2")  # same size and first MiBs, other tail
    cache = str(tmp_path / "cache")
    os.makedirs(cache)
    key_a = gguf._fingerprint(str(a), cache)
    assert key_a != gguf._fingerprint(str(b), cache)
    stat = a.stat()
    a.write_bytes(head + b"3")  # same size, mtime restored: the stored digest is reused, not recomputed
    os.utime(a, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert gguf._fingerprint(str(a), cache) == key_a
    os.utime(a, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched: hashed again
    assert gguf._fingerprint(str(a), cache) != key_a
