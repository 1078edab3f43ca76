"""ModelConfig: the typed view of an HF ``config.json`` for every supported decoder architecture."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

import numpy as np

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "glm")


@dataclasses.dataclass(frozen=True)
class RopeConfig:
    """Rotary embedding settings.

    Attributes:
      theta: base wavelength.
      rope_type: "default" or "llama3".
      rotary_dim: how many leading channels of each head are rotated (partial rotary when < head_dim).
      interleaved: True for GLM's layout (pairs (0,1),(2,3),...), False for the rotate-half layout.
      factor / low_freq_factor / high_freq_factor / original_max_position_embeddings: llama3 scaling.
    """

    theta: float
    rotary_dim: int
    rope_type: str = "default"
    interleaved: bool = False
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192

    def inv_freq(self) -> np.ndarray:
        """Inverse frequencies, float32 [rotary_dim // 2], exactly as HF computes them."""
        exponents = np.arange(0, self.rotary_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(self.rotary_dim)
        inv = (1.0 / (np.float32(self.theta) ** exponents)).astype(np.float32)
        if self.rope_type == "default":
            return inv
        if self.rope_type != "llama3":
            raise ValueError(f"unsupported rope_type {self.rope_type!r}; supported: default, llama3")
        old = self.original_max_position_embeddings
        low_wavelen = old / self.low_freq_factor
        high_wavelen = old / self.high_freq_factor
        wavelen = 2 * math.pi / inv
        scaled = np.where(wavelen > low_wavelen, inv / self.factor, inv)
        smooth = (old / wavelen - self.low_freq_factor) / (self.high_freq_factor - self.low_freq_factor)
        smoothed = (1 - smooth) * scaled / self.factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        return np.where(medium, smoothed, scaled).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture hyper-parameters of a decoder-only transformer (HF naming where one exists)."""

    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    rope: RopeConfig
    max_position_embeddings: int
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # bias on q, k and v projections (never on o)
    fused_gate_up: bool = False  # GLM stores gate and up as one [2*mlp, embed] matrix
    sliding_windows: tuple[int, ...] = ()  # per layer; 0 = full attention. Empty = all full.
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None
    raw: tuple[tuple[str, Any], ...] = ()  # the original config.json items, kept for export

    @property
    def raw_dict(self) -> dict[str, Any]:
        return json.loads(dict(self.raw)["__json__"]) if self.raw else {}

    def layer_windows(self) -> np.ndarray:
        """int32 [num_hidden_layers] attention window per layer (0 = unlimited)."""
        if not self.sliding_windows:
            return np.zeros((self.num_hidden_layers,), np.int32)
        return np.asarray(self.sliding_windows, np.int32)

    def num_params(self) -> int:
        e, m, v = self.hidden_size, self.intermediate_size, self.vocab_size
        q = self.num_attention_heads * self.head_dim
        kv = self.num_key_value_heads * self.head_dim
        per_layer = e * (q + 2 * kv) + q * e + 3 * e * m + 2 * e
        if self.attention_bias:
            per_layer += q + 2 * kv
        head = 0 if self.tie_word_embeddings else v * e
        return v * e + head + e + self.num_hidden_layers * per_layer


def _rope_from_hf(cfg: dict[str, Any], head_dim: int, model_type: str) -> RopeConfig:
    # Both forms: transformers 5 writes rope_parameters={rope_theta, rope_type, ...}; older checkpoints use top-level
    # rope_theta and rope_scaling.
    params = dict(cfg.get("rope_parameters") or {})
    scaling = cfg.get("rope_scaling") or {}
    merged = {**scaling, **params}
    theta = merged.get("rope_theta", cfg.get("rope_theta", 10000.0))
    rope_type = merged.get("rope_type", merged.get("type", "default")) or "default"
    default_partial = 0.5 if model_type == "glm" else 1.0
    partial = merged.get("partial_rotary_factor", cfg.get("partial_rotary_factor", default_partial))
    if rope_type not in ("default", "llama3"):
        raise ValueError(f"config.json: rope type {rope_type!r} is not supported (supported: default, llama3)")
    kwargs = {}
    if rope_type == "llama3":
        for key in ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"):
            if key not in merged:
                raise ValueError(f"config.json: llama3 rope scaling is missing {key!r}")
            kwargs[key] = merged[key]
    return RopeConfig(
        theta=float(theta),
        rotary_dim=int(head_dim * partial),
        rope_type=rope_type,
        interleaved=model_type == "glm",
        **kwargs,
    )


def _as_tuple(x) -> tuple[int, ...]:
    if x is None:
        return ()
    return tuple(int(v) for v in x) if isinstance(x, (list, tuple)) else (int(x),)


def config_from_hf_dict(cfg: dict[str, Any], source: str = "config.json") -> ModelConfig:
    """Build a ModelConfig from the dict of an HF config.json; errors name the source and key."""
    model_type = cfg.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"{source}: model_type {model_type!r} is not supported; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
        if key not in cfg:
            raise ValueError(f"{source}: missing required key {key!r}")
    heads = int(cfg["num_attention_heads"])
    head_dim = int(cfg.get("head_dim") or cfg["hidden_size"] // heads)
    layers = int(cfg["num_hidden_layers"])
    windows: tuple[int, ...] = ()
    if model_type == "mistral" and cfg.get("sliding_window"):
        windows = (int(cfg["sliding_window"]),) * layers
    if model_type == "qwen2" and cfg.get("use_sliding_window") and cfg.get("sliding_window"):
        first = int(cfg.get("max_window_layers", layers))
        windows = tuple(int(cfg["sliding_window"]) if i >= first else 0 for i in range(layers))
    default_bias = {"qwen2": True, "glm": True}.get(model_type, False)
    return ModelConfig(
        model_type=model_type,
        vocab_size=int(cfg["vocab_size"]),
        hidden_size=int(cfg["hidden_size"]),
        intermediate_size=int(cfg["intermediate_size"]),
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=int(cfg.get("num_key_value_heads") or heads),
        head_dim=head_dim,
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        rope=_rope_from_hf(cfg, head_dim, model_type),
        max_position_embeddings=int(cfg.get("max_position_embeddings", 4096)),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        attention_bias=bool(cfg.get("attention_bias", default_bias)),
        fused_gate_up=model_type == "glm",
        sliding_windows=windows,
        bos_token_id=cfg.get("bos_token_id"),
        eos_token_ids=_as_tuple(cfg.get("eos_token_id")),
        pad_token_id=cfg.get("pad_token_id"),
        raw=(("__json__", json.dumps(cfg, sort_keys=True)),),
    )


def load_model_config(path: str | os.PathLike) -> ModelConfig:
    """Read ``path/config.json`` (or a config.json file path) into a ModelConfig."""
    path = os.fspath(path)
    file = path if path.endswith(".json") else os.path.join(path, "config.json")
    if not os.path.exists(file):
        raise FileNotFoundError(f"{file}: no config.json (expected an HF checkpoint directory)")
    try:
        with open(file) as f:
            cfg = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{file}: not valid JSON ({e})") from None
    return config_from_hf_dict(cfg, source=file)
