"""Checkpoint I/O: HF round trip, indexed shards, bf16, GGUF conversion, clear errors on bad input."""

import dataclasses
import json
import os

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file

from spar_jax.models import from_pretrained, load_model_config, save_pretrained
from spar_jax.models.gguf import hf_tensor_name, unpermute_rotary

from tiny_checkpoints import ARCHS, write_checkpoint


def _all_tensors(directory):
    out = {}
    for name in os.listdir(directory):
        if name.endswith(".safetensors"):
            out.update(load_file(os.path.join(directory, name)))
    return out


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_hf_round_trip_is_bit_exact(arch, tmp_path):
    src = write_checkpoint(tmp_path / "src", arch, seed=3)
    model = from_pretrained(src)
    save_pretrained(model, tmp_path / "out")
    a, b = _all_tensors(src), _all_tensors(tmp_path / "out")
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].tobytes() == b[name].tobytes(), name
    ours, theirs = load_model_config(tmp_path / "out"), load_model_config(src)
    assert dataclasses.replace(ours, raw=()) == dataclasses.replace(theirs, raw=())
    cfg_out = json.load(open(tmp_path / "out" / "config.json"))
    assert cfg_out["model_type"] == json.load(open(os.path.join(src, "config.json")))["model_type"]


def test_export_loads_in_transformers_and_sharded_index(tmp_path):
    import torch
    import transformers

    src = write_checkpoint(tmp_path / "src", "llama", seed=4, shards=3)
    assert os.path.exists(os.path.join(src, "model.safetensors.index.json"))
    model = from_pretrained(src)
    # a tiny shard limit forces an indexed multi-file export
    save_pretrained(model, tmp_path / "out", max_shard_bytes=40_000)
    assert os.path.exists(tmp_path / "out" / "model.safetensors.index.json")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32)
    ids = np.arange(3, 15, dtype=np.int64)[None]
    with torch.no_grad():
        ref = hf(torch.tensor(ids)).logits.numpy()
    assert np.abs(np.asarray(model(ids.astype(np.int32))) - ref).max() < 1e-4


def test_bfloat16_checkpoint_round_trip(tmp_path):
    src = write_checkpoint(tmp_path / "src", "qwen2", seed=5, dtype=ml_dtypes.bfloat16)
    model = from_pretrained(src, dtype="bfloat16")
    assert model.embed[...].dtype == jnp.bfloat16
    logits = model(np.arange(3, 10, dtype=np.int32)[None])
    assert logits.dtype == jnp.float32 and bool(jnp.isfinite(logits).all())
    save_pretrained(model, tmp_path / "out")
    a, b = _all_tensors(src), _all_tensors(tmp_path / "out")
    for name in a:
        assert a[name].tobytes() == b[name].tobytes(), name


def test_unknown_model_type_is_a_clear_error(tmp_path):
    src = write_checkpoint(tmp_path / "src", "llama", model_type="gpt_neox")
    with pytest.raises(ValueError, match=r"config\.json: model_type 'gpt_neox' is not supported"):
        from_pretrained(src)


def test_missing_tensor_names_checkpoint_and_tensor(tmp_path):
    from safetensors.numpy import save_file

    src = write_checkpoint(tmp_path / "src", "llama")
    tensors = load_file(os.path.join(src, "model.safetensors"))
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, os.path.join(src, "model.safetensors"))
    with pytest.raises(ValueError, match=r"model\.layers\.1\.mlp\.up_proj\.weight' is missing"):
        from_pretrained(src)


def test_shape_mismatch_names_file_and_tensor(tmp_path):
    src = write_checkpoint(tmp_path / "src", "llama")
    cfg = json.load(open(os.path.join(src, "config.json")))
    cfg["intermediate_size"] = 128  # the weights were written with 96
    json.dump(cfg, open(os.path.join(src, "config.json"), "w"))
    with pytest.raises(
        ValueError, match=r"model\.safetensors: tensor 'model\.layers\.0\.mlp\.down_proj\.weight' has shape"
    ):
        from_pretrained(src)


def test_corrupt_file_is_a_clear_error(tmp_path):
    src = write_checkpoint(tmp_path / "src", "llama")
    with open(os.path.join(src, "model.safetensors"), "r+b") as f:
        f.write(b"\xff" * 64)
    with pytest.raises(ValueError, match=r"model\.safetensors: cannot read safetensors file"):
        from_pretrained(src)


def test_missing_shard_file_is_a_clear_error(tmp_path):
    src = write_checkpoint(tmp_path / "src", "llama", shards=2)
    os.remove(os.path.join(src, "model-00002-of-00002.safetensors"))
    with pytest.raises(FileNotFoundError, match=r"model-00002-of-00002\.safetensors: listed in the safetensors index"):
        from_pretrained(src)


def test_gguf_names_and_unpermute():
    assert hf_tensor_name("blk.7.attn_q.weight") == "model.layers.7.self_attn.q_proj.weight"
    assert hf_tensor_name("token_embd.weight") == "model.embed_tokens.weight"
    assert hf_tensor_name("output_norm.weight") == "model.norm.weight"
    with pytest.raises(ValueError, match="no HF equivalent"):
        hf_tensor_name("blk.0.attn_qkv.weight")
    # llama.cpp permutes rows per head as w.reshape(h, 2, d/2, in).swapaxes(1, 2); we must invert exactly that.
    rng = np.random.default_rng(0)
    hf = rng.standard_normal((3 * 8, 5)).astype(np.float32)
    permuted = hf.reshape(3, 2, 4, 5).swapaxes(1, 2).reshape(hf.shape)
    np.testing.assert_array_equal(unpermute_rotary(permuted, 3), hf)


def test_not_a_gguf_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"this is not gguf" * 10)
    with pytest.raises(ValueError, match="not a readable GGUF file"):
        from_pretrained(str(bad))
