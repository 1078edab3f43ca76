"""HF safetensors <-> our parameter tree, through one declarative tensor-name map per architecture.

A map is a list of :class:`TensorRule`: an HF tensor name (``{i}`` = layer index), the parameter(s) it becomes in
our tree, and a :class:`Transform` pair (HF -> ours, ours -> HF) made of reshapes/transposes/splits only, so a round
trip is bit-exact. Loading is streamed tensor by tensor: each tensor is read from its file (memory-mapped), placed on
its target sharding, and written into the stacked layer array in place.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy)
import numpy as np

from spar_jax.models.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class Transform:
    """to_ours(hf_array, cfg) -> tuple of our arrays; to_hf(tuple of our arrays, cfg) -> hf_array."""

    to_ours: Callable[[np.ndarray, ModelConfig], tuple[np.ndarray, ...]]
    to_hf: Callable[[Sequence[np.ndarray], ModelConfig], np.ndarray]


IDENTITY = Transform(lambda a, c: (a,), lambda xs, c: xs[0])
LINEAR = Transform(lambda a, c: (a.T,), lambda xs, c: xs[0].T)  # HF Linear [out, in] <-> ours [in, out]


def _heads_in(heads_attr: str) -> Transform:
    # HF [heads * head_dim, embed] <-> ours [embed, heads, head_dim]
    return Transform(
        lambda a, c: (a.T.reshape(a.shape[1], getattr(c, heads_attr), c.head_dim),),
        lambda xs, c: xs[0].reshape(xs[0].shape[0], -1).T,
    )


def _heads_bias(heads_attr: str) -> Transform:
    return Transform(lambda a, c: (a.reshape(getattr(c, heads_attr), c.head_dim),), lambda xs, c: xs[0].reshape(-1))


# HF o_proj [embed, heads * head_dim] <-> ours [heads, head_dim, embed]
HEADS_OUT = Transform(
    lambda a, c: (a.T.reshape(c.num_attention_heads, c.head_dim, a.shape[0]),),
    lambda xs, c: xs[0].reshape(-1, xs[0].shape[-1]).T,
)
# GLM gate_up_proj [2 * mlp, embed] <-> ours gate [embed, mlp], up [embed, mlp]
SPLIT_GATE_UP = Transform(
    lambda a, c: tuple(np.split(a.T, 2, axis=1)),
    lambda xs, c: np.concatenate(xs, axis=1).T,
)


@dataclasses.dataclass(frozen=True)
class TensorRule:
    hf: str
    ours: tuple[str, ...]
    transform: Transform = IDENTITY
    when: Callable[[ModelConfig], bool] = lambda cfg: True

    @property
    def per_layer(self) -> bool:
        return "{i}" in self.hf


_A = "model.layers.{i}.self_attn."
_M = "model.layers.{i}.mlp."
_BASE = [
    TensorRule("model.embed_tokens.weight", ("embed",)),
    TensorRule("model.norm.weight", ("final_norm",)),
    TensorRule("lm_head.weight", ("lm_head",), LINEAR, when=lambda c: not c.tie_word_embeddings),
    TensorRule("model.layers.{i}.input_layernorm.weight", ("layers.attn_norm",)),
    TensorRule("model.layers.{i}.post_attention_layernorm.weight", ("layers.mlp_norm",)),
    TensorRule(_A + "q_proj.weight", ("layers.q",), _heads_in("num_attention_heads")),
    TensorRule(_A + "k_proj.weight", ("layers.k",), _heads_in("num_key_value_heads")),
    TensorRule(_A + "v_proj.weight", ("layers.v",), _heads_in("num_key_value_heads")),
    TensorRule(_A + "o_proj.weight", ("layers.o",), HEADS_OUT),
    TensorRule(_A + "q_proj.bias", ("layers.q_bias",), _heads_bias("num_attention_heads"), lambda c: c.attention_bias),
    TensorRule(_A + "k_proj.bias", ("layers.k_bias",), _heads_bias("num_key_value_heads"), lambda c: c.attention_bias),
    TensorRule(_A + "v_proj.bias", ("layers.v_bias",), _heads_bias("num_key_value_heads"), lambda c: c.attention_bias),
    TensorRule(_M + "down_proj.weight", ("layers.down",), LINEAR),
]
_SEPARATE_GATE_UP = [
    TensorRule(_M + "gate_proj.weight", ("layers.gate",), LINEAR),
    TensorRule(_M + "up_proj.weight", ("layers.up",), LINEAR),
]
_FUSED_GATE_UP = [TensorRule(_M + "gate_up_proj.weight", ("layers.gate", "layers.up"), SPLIT_GATE_UP)]

NAME_MAPS: dict[str, list[TensorRule]] = {
    "llama": _BASE + _SEPARATE_GATE_UP,
    "mistral": _BASE + _SEPARATE_GATE_UP,
    "qwen2": _BASE + _SEPARATE_GATE_UP,
    "glm": _BASE + _FUSED_GATE_UP,
}


def rules_for(cfg: ModelConfig) -> list[TensorRule]:
    return [r for r in NAME_MAPS[cfg.model_type] if r.when(cfg)]


class SafetensorsReader:
    """Reads tensors by name from a single-file or indexed (sharded) HF safetensors checkpoint."""

    def __init__(self, directory: str):
        from safetensors import safe_open

        self._safe_open = safe_open
        self.directory = directory
        self._handles: dict[str, object] = {}
        index = os.path.join(directory, "model.safetensors.index.json")
        single = os.path.join(directory, "model.safetensors")
        if os.path.exists(index):
            try:
                with open(index) as f:
                    weight_map = json.load(f)["weight_map"]
            except (json.JSONDecodeError, KeyError) as e:
                raise ValueError(f"{index}: not a valid safetensors index ({e})") from None
            self.files = {name: os.path.join(directory, file) for name, file in weight_map.items()}
        elif os.path.exists(single):
            self.files = {name: single for name in self._open(single).keys()}
        else:
            raise FileNotFoundError(f"{directory}: no model.safetensors or model.safetensors.index.json")

    def _open(self, file: str):
        if file not in self._handles:
            if not os.path.exists(file):
                raise FileNotFoundError(f"{file}: listed in the safetensors index but missing")
            try:
                self._handles[file] = self._safe_open(file, framework="np")
            except Exception as e:  # safetensors raises its own error types for corrupt headers
                raise ValueError(f"{file}: cannot read safetensors file ({e})") from None
        return self._handles[file]

    def get(self, name: str) -> np.ndarray:
        if name not in self.files:
            raise ValueError(f"{self.directory}: tensor {name!r} is missing from the checkpoint")
        file = self.files[name]
        handle = self._open(file)
        try:
            return handle.get_tensor(name)
        except Exception as e:
            raise ValueError(f"{file}: cannot read tensor {name!r} ({e})") from None


def _expected_shape(var) -> tuple[int, ...]:
    return tuple(var.get_value().shape)


def load_state(abstract_state, cfg: ModelConfig, directory: str, shardings) -> None:
    """Fill ``abstract_state`` (an nnx State of ShapeDtypeStructs) in place with arrays read from ``directory``.

    ``shardings`` is a matching pytree of jax Shardings. Errors name the file and tensor.
    """
    from flax import nnx

    reader = SafetensorsReader(directory)
    flat = dict(nnx.to_flat_state(abstract_state))
    flat_sh = dict(nnx.to_flat_state(shardings)) if not isinstance(shardings, jax.sharding.Sharding) else None

    def target(path: str):
        key = tuple(path.split("."))
        sharding = shardings if flat_sh is None else flat_sh[key]
        sharding = sharding.get_value() if isinstance(sharding, nnx.Variable) else sharding
        return flat[key], sharding

    for rule in rules_for(cfg):
        targets = [target(p) for p in rule.ours]
        if not rule.per_layer:
            arrays = rule.transform.to_ours(reader.get(rule.hf), cfg)
            for (var, sharding), arr, path in zip(targets, arrays, rule.ours):
                var.set_value(_place(arr, var, sharding, rule.hf, path, reader))
            continue
        stacked = [
            jax.jit(lambda: jnp.zeros(_expected_shape(var), var.get_value().dtype), out_shardings=sh)()
            for var, sh in targets
        ]
        for i in range(cfg.num_hidden_layers):
            name = rule.hf.format(i=i)
            arrays = rule.transform.to_ours(reader.get(name), cfg)
            for j, ((var, sharding), arr) in enumerate(zip(targets, arrays)):
                layer = _place(arr, var, _drop_leading(sharding), name, rule.ours[j], reader, per_layer=True)
                stacked[j] = _set_layer(stacked[j], layer, i)
        for (var, _), arr in zip(targets, stacked):
            var.set_value(arr)


def _drop_leading(sharding):
    from jax.sharding import NamedSharding, PartitionSpec

    if isinstance(sharding, NamedSharding):
        return NamedSharding(sharding.mesh, PartitionSpec(*tuple(sharding.spec)[1:]))
    return sharding


def _set_layer_impl(stacked, layer, i):
    return jax.lax.dynamic_update_index_in_dim(stacked, layer.astype(stacked.dtype), i, 0)


_set_layer = jax.jit(_set_layer_impl, donate_argnums=0)


def _place(arr: np.ndarray, var, sharding, hf_name: str, path: str, reader, per_layer=False):
    expected = _expected_shape(var)[1:] if per_layer else _expected_shape(var)
    if tuple(arr.shape) != tuple(expected):
        file = reader.files.get(hf_name, reader.directory)
        raise ValueError(
            f"{file}: tensor {hf_name!r} has shape {tuple(arr.shape)} after conversion but the config needs "
            f"{tuple(expected)} for {path!r} (checkpoint does not match config.json)"
        )
    arr = np.ascontiguousarray(arr.astype(var.get_value().dtype))
    return jax.make_array_from_callback(arr.shape, sharding, lambda index: arr[index])


def _host_array(x: jax.Array) -> np.ndarray:
    """A full host copy of x, gathered across processes when x is not fully addressable."""
    if not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


def iter_hf_tensors(state, cfg: ModelConfig):
    """Yield (hf_name, numpy array) for every tensor of the HF checkpoint, one layer tensor at a time."""
    from flax import nnx

    flat = {".".join(k): v for k, v in nnx.to_flat_state(state)}
    for rule in rules_for(cfg):
        values = [flat[p].get_value() for p in rule.ours]
        if not rule.per_layer:
            yield rule.hf, np.ascontiguousarray(rule.transform.to_hf([_host_array(v) for v in values], cfg))
            continue
        for i in range(cfg.num_hidden_layers):
            array = rule.transform.to_hf([_host_array(v[i]) for v in values], cfg)
            yield rule.hf.format(i=i), np.ascontiguousarray(array)
