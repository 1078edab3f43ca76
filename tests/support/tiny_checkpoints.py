"""Tiny random HF-layout checkpoints written with numpy + safetensors (no torch), one per architecture."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
from safetensors.numpy import save_file

SMOLLM_TOKENIZER_SOURCE = None  # filled lazily: the demo model's converted directory

BASE = {
    "vocab_size": 256,
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "rms_norm_eps": 1e-5,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
    "dtype": "float32",
}

ARCHS = {
    "llama": {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "rope_theta": 10000.0},
    "llama3": {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "rope_parameters": {
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
    },
    "mistral": {
        "model_type": "mistral",
        "architectures": ["MistralForCausalLM"],
        "rope_theta": 10000.0,
        "sliding_window": 6,
        "head_dim": 16,
    },
    "qwen2": {
        "model_type": "qwen2",
        "architectures": ["Qwen2ForCausalLM"],
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
    },
    "glm": {
        "model_type": "glm",
        "architectures": ["GlmForCausalLM"],
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5},
        "head_dim": 16,
        "attention_bias": True,
    },
    "smollm2": {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "rope_parameters": {"rope_type": "default", "rope_theta": 100000.0},
        "tie_word_embeddings": True,
        "num_attention_heads": 6,
        "num_key_value_heads": 3,
        "hidden_size": 96,
        "head_dim": 16,
    },
}


def hf_config(arch: str, **overrides) -> dict:
    cfg = {**BASE, "tie_word_embeddings": False, **ARCHS[arch], **overrides}
    return cfg


def random_tensors(cfg: dict, seed: int = 0, dtype=np.float32) -> dict[str, np.ndarray]:
    """HF tensor name -> random array of HF shape for ``cfg``."""
    rng = np.random.default_rng(seed)
    e, m, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    h, k = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    d = cfg.get("head_dim") or e // h
    bias = cfg.get("attention_bias", cfg["model_type"] in ("qwen2", "glm"))

    def w(*shape, scale=0.08):
        return (rng.standard_normal(shape) * scale).astype(dtype)

    t = {"model.embed_tokens.weight": w(v, e, scale=0.5), "model.norm.weight": (1 + w(e)).astype(dtype)}
    if not cfg.get("tie_word_embeddings"):
        t["lm_head.weight"] = w(v, e, scale=0.2)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = (1 + w(e)).astype(dtype)
        t[p + "post_attention_layernorm.weight"] = (1 + w(e)).astype(dtype)
        t[p + "self_attn.q_proj.weight"] = w(h * d, e, scale=0.3)
        t[p + "self_attn.k_proj.weight"] = w(k * d, e, scale=0.3)
        t[p + "self_attn.v_proj.weight"] = w(k * d, e)
        t[p + "self_attn.o_proj.weight"] = w(e, h * d)
        if bias:
            t[p + "self_attn.q_proj.bias"] = w(h * d)
            t[p + "self_attn.k_proj.bias"] = w(k * d)
            t[p + "self_attn.v_proj.bias"] = w(k * d)
        if cfg["model_type"] == "glm":
            t[p + "mlp.gate_up_proj.weight"] = w(2 * m, e)
        else:
            t[p + "mlp.gate_proj.weight"] = w(m, e)
            t[p + "mlp.up_proj.weight"] = w(m, e)
        t[p + "mlp.down_proj.weight"] = w(e, m)
    return t


def write_checkpoint(directory, arch: str, *, seed: int = 0, shards: int = 1, dtype=np.float32, **overrides) -> str:
    """Write a tiny random HF checkpoint of ``arch`` into ``directory`` (single file, or ``shards`` files + index)."""
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    cfg = hf_config(arch, **overrides)
    tensors = random_tensors(cfg, seed, dtype)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    if shards == 1:
        save_file(tensors, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
    else:
        names = list(tensors)
        weight_map = {}
        for s in range(shards):
            file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
            part = {n: tensors[n] for n in names[s::shards]}
            save_file(part, os.path.join(directory, file), metadata={"format": "pt"})
            weight_map.update({n: file for n in part})
        with open(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": weight_map}, f)
    return directory


def copy_demo_tokenizer(directory) -> None:
    """Copy the demo model's tokenizer files (real BPE + ChatML template) into a tiny checkpoint directory.

    The tiny model's vocab must then be 49152 (pass ``vocab_size=49152``).
    """
    from spar_jax.models.tokenizer import resolve_checkpoint

    src = resolve_checkpoint("demo")
    for name in os.listdir(src):
        if name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy(os.path.join(src, name), os.path.join(directory, name))
