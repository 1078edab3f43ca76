"""The run configuration: a config (an ml-collections ConfigDict on the schema of ``spar_jax.config_schema``) read
once here into typed, validated values.

A config file (``configs/*.py``) starts from ``default_config()`` and changes values; a key that is not in the
schema, or a value of the wrong type or range, fails at start-up with a message naming the key.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import ml_collections

from spar_jax import mesh_check, spar
from spar_jax.config_schema import (
    _SHARED_FIELDS,
    _TRAIN_KEYS,
    EVAL_STAGES,
    STAGES,
    _eval_settings,
    default_config,
    descriptions,
    field_docs,
)
from spar_jax.fingerprint import RETIRED_KEYS
from spar_jax.judge.generation import SamplingParams
from spar_jax.kernels.attention import IMPLS as ATTENTION_IMPLS
from spar_jax.models.transformer import REMAT_POLICIES
from spar_jax.parallel import Rules, normalize_rules
from spar_jax.spar.constraint_prompts import parse_constraint_types
from spar_jax.spar.judges import KINDS
from spar_jax.spar.sources import training_types
from spar_jax.training.trainer import TrainConfig

__all__ = [
    "EVAL_STAGES", "RETIRED_KEYS", "STAGES", "RunConfig", "default_config", "descriptions", "field_docs", "parse",
]  # fmt: skip


def _dataclass_from_section(cls, section, name: str, shared: dict[str, Any] | None = None):
    kwargs = {}
    for f in dataclasses.fields(cls):
        if shared and f.name in shared:
            kwargs[f.name] = shared[f.name]
            continue
        value = section[f.name]
        default = getattr(cls(), f.name)
        if dataclasses.is_dataclass(default):
            value = _dataclass_from_section(type(default), value, f"{name}.{f.name}")
        elif isinstance(default, tuple):
            value = tuple(value)
        kwargs[f.name] = value
    return _build(name, cls, **kwargs)


# ----------------------------------------------------------------------------------------------- typed views


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    path: str
    dtype: str
    param_dtype: str | None
    remat: str
    scan_layers: bool = True
    attention_impl: str = "auto"


@dataclasses.dataclass(frozen=True)
class MeshSpec:
    shape: tuple[int, int, int]
    rules: Rules


@dataclasses.dataclass(frozen=True)
class EngineSpec:
    batch_size: int
    batching: str
    dtype: str
    max_length: int
    truncate: str
    progress: bool


@dataclasses.dataclass(frozen=True)
class PromptSpec:
    source: str
    field: str
    num_train: int
    per_iteration: int
    num_heldout: int
    constraint_types: str
    max_constraints: int
    heldout_types: str
    evolve: bool
    evolve_model: str
    evolve_max_new_tokens: int


@dataclasses.dataclass(frozen=True)
class SparSpec:
    iterations: int
    shard_size: int
    templates_file: str
    initial_sft_actor: str
    initial_sft_refiner: str
    eval_base: bool
    ablations: tuple[str, ...]
    bootstrap_prompts: int
    bootstrap_responses: str
    bootstrap_per_prompt: int
    bootstrap_actor: bool
    bootstrap_refine_share: float


@dataclasses.dataclass(frozen=True)
class EvalSpec:
    ifeval_source: str
    ifeval_limit: int
    max_new_tokens: int
    ifeval_final_only: bool


@dataclasses.dataclass(frozen=True)
class StudySpec:
    results_dir: str
    rules_run: bool


@dataclasses.dataclass(frozen=True)
class AnswerSpec:
    prompts: tuple[str, ...]
    prompts_file: str
    max_new_tokens: int


@dataclasses.dataclass(frozen=True)
class LoggingSpec:
    wandb_project: str


@dataclasses.dataclass(frozen=True)
class HubSpec:
    push_to: str
    push_data: bool
    private: bool


@dataclasses.dataclass(frozen=True)
class RunConfig:
    workdir: str
    seed: int
    stages: tuple[str, ...]
    actor: ModelSpec
    refiner: ModelSpec
    mesh: MeshSpec
    engine: EngineSpec
    prompts: PromptSpec
    spar: SparSpec
    judge_kind: str
    mining: Any  # spar.MiningConfig
    search: Any  # spar.SearchConfig
    mixture: Any  # spar.MixtureConfig
    dpo: dict[str, Any]  # TrainConfig keyword arguments
    sft: dict[str, Any]
    sft0: dict[str, Any]  # the initial (Stage 0) SFT of actor and refiner
    eval: EvalSpec
    answer: AnswerSpec
    study: StudySpec
    evals: dict[str, Any]  # evaluation name -> its settings dataclass (spar_jax.eval.*)
    judge_paths: dict[str, str]  # evaluation name -> separate judge checkpoint ("" = the refiner)
    logging: LoggingSpec
    hub: HubSpec
    raw: dict[str, Any]  # the full resolved config, for the record
    defaults: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)  # the schema's, as raw's layout


def check_keys(config: ml_collections.ConfigDict, schema: ml_collections.ConfigDict, prefix: str = "") -> None:
    """Raise ValueError naming the first key of ``config`` that ``schema`` does not have, or a type mismatch."""
    for key in config.keys():
        path = f"{prefix}{key}"
        if key not in schema and path in RETIRED_KEYS:
            raise ValueError(f"config key {path!r} was replaced by {RETIRED_KEYS[path]!r}")
        if key not in schema:
            close = [k for k in schema.keys() if k.lower() == key.lower() or k[:4] == key[:4]]
            hint = f" (did you mean {prefix}{close[0]!r}?)" if close else ""
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


def _flatten(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key in config.keys():
        value = config[key]
        if isinstance(value, ml_collections.ConfigDict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _build(section: str, fn, *args, **kwargs):
    """Call a typed constructor; its ValueError is re-raised naming the config section."""
    try:
        return fn(*args, **kwargs)
    except (ValueError, TypeError) as e:
        raise ValueError(f"config section {section!r}: {e}") from None


def _require(ok: bool, key: str, message: str):
    if not ok:
        raise ValueError(f"config key {key!r} {message}")


def parse(config: ml_collections.ConfigDict) -> RunConfig:
    """Validate ``config`` against the schema and return the typed RunConfig."""
    check_keys(config, default_config())
    c = default_config()
    flat = _flatten(config)
    for key, value in flat.items():  # tuples and lists are interchangeable; the schema keeps its own types
        section, _, leaf = key.rpartition(".")
        target = _section(c, section) if section else c
        target[leaf] = tuple(value) if isinstance(value, list) else value
    for s in c.stages:
        _require(s in STAGES, "stages", f"names unknown stage {s!r}; known stages: {', '.join(STAGES)}")
    _require(c.on_change in ("stop", "rerun"), "on_change", f"must be 'stop' or 'rerun', got {c.on_change!r}")
    for s in ("ifeval", "calibration"):
        _require(
            s not in c.stages or bool(c.eval.ifeval_source),
            "eval.ifeval_source",
            f'must name the IFEval prompts for the {s} stage (a JSONL path or "google/IFEval")',
        )
    _require(len(c.mesh.shape) == 3, "mesh.shape", f"must have 3 entries (data, fsdp, tensor), got {c.mesh.shape!r}")
    for name in ("actor", "refiner"):
        _require(
            c[name].dtype in ("float32", "bfloat16", "float16"), f"{name}.dtype", "must be float32, bfloat16 or float16"
        )
        _require(
            c[name].param_dtype in ("", "float32", "bfloat16", "float16"),
            f"{name}.param_dtype",
            "must be '' (same as dtype), float32, bfloat16 or float16",
        )
        _require(
            c[name].remat in REMAT_POLICIES,
            f"{name}.remat",
            f"is {c[name].remat!r}; choose one of {', '.join(sorted(REMAT_POLICIES))}",
        )
        _require(
            c[name].attention_impl in ATTENTION_IMPLS,
            f"{name}.attention_impl",
            f"is {c[name].attention_impl!r}; choose one of {', '.join(ATTENTION_IMPLS)}",
        )
    _require(c.engine.max_length >= 0, "engine.max_length", "must be >= 0 (0 = the model's context length)")
    _require(
        all(int(x) >= 1 or int(x) == -1 for x in c.mesh.shape),
        "mesh.shape",
        f"entries must be >= 1 or -1 (the remaining devices), got {tuple(c.mesh.shape)}",
    )
    _require(c.engine.batch_size > 0, "engine.batch_size", "must be > 0")
    _require(c.engine.truncate in ("error", "left"), "engine.truncate", "must be 'error' or 'left'")
    _require(c.engine.batching in ("continuous", "static"), "engine.batching", "must be 'continuous' or 'static'")
    _require(
        c.engine.dtype in ("auto", "float32", "bfloat16", "float16"),
        "engine.dtype",
        "must be auto, float32, bfloat16 or float16",
    )
    _require(c.spar.iterations >= 1, "spar.iterations", "must be >= 1")
    _require(c.spar.shard_size >= 1, "spar.shard_size", "must be >= 1")
    _require(
        c.spar.bootstrap_responses in ("synthetic", "actor"),
        "spar.bootstrap_responses",
        "must be 'synthetic' or 'actor'",
    )
    _require(
        not (c.spar.bootstrap_prompts and c.spar.initial_sft_refiner),
        "spar.bootstrap_prompts",
        "and spar.initial_sft_refiner both give the refiner's initial SFT data: set one",
    )
    _require(0.0 < c.spar.bootstrap_refine_share <= 1.0, "spar.bootstrap_refine_share", "must be in (0, 1]")
    _require(
        not (c.spar.bootstrap_actor and c.spar.initial_sft_actor),
        "spar.bootstrap_actor",
        "and spar.initial_sft_actor both give the actor's initial SFT data: set one",
    )
    _require(
        c.prompts.num_train >= 0 and c.prompts.num_heldout >= 0, "prompts.num_train", "and num_heldout must be >= 0"
    )
    _require(
        not c.hub.push_to or re.fullmatch(r"[\w.-]+/[\w.-]+", c.hub.push_to) is not None,
        "hub.push_to",
        f"must be a repo prefix 'org/name' or '', got {c.hub.push_to!r}",
    )
    _require(c.prompts.per_iteration >= 0, "prompts.per_iteration", "must be >= 0")
    _require(
        not (
            c.prompts.source == "generated"
            and c.prompts.per_iteration
            and c.prompts.per_iteration * c.spar.iterations > c.prompts.num_train
        ),
        "prompts.per_iteration",
        f"x spar.iterations ({c.prompts.per_iteration} x {c.spar.iterations}) exceeds prompts.num_train "
        f"({c.prompts.num_train}): each iteration needs fresh prompts",
    )
    for a in c.spar.ablations:
        _require(
            a in ("no_tree", "no_refine"), "spar.ablations", f"names unknown ablation {a!r}; known: no_tree, no_refine"
        )
    _require(c.judge.kind in KINDS, "judge.kind", f"must be one of {', '.join(KINDS)}, got {c.judge.kind!r}")
    _require(1 <= c.prompts.max_constraints <= 4, "prompts.max_constraints", "must be between 1 and 4")
    for key in ("constraint_types", "heldout_types"):
        try:
            parse_constraint_types(c.prompts[key])
        except ValueError as e:
            _require(False, f"prompts.{key}", str(e))
    _require(
        not c.prompts.heldout_types.strip() or bool(training_types(c)),
        "prompts.heldout_types",
        "reserves every type of prompts.constraint_types: training prompts would have none left",
    )
    m, s = c.mining, c.search
    mining = _build(
        "mining",
        spar.MiningConfig,
        n_samples=m.n_samples,
        k_votes=m.k_votes,
        actor_sampling=_build("mining", SamplingParams, m.actor_max_new_tokens, m.actor_temperature, m.actor_top_p),
        judge_sampling=_build("mining", SamplingParams, m.judge_max_new_tokens, m.judge_temperature, m.judge_top_p),
        truncated_roots=m.truncated_roots,
    )
    search = _build(
        "search",
        spar.SearchConfig,
        strategy=s.strategy,
        branch=s.branch,
        keep=s.keep,
        max_depth=s.max_depth,
        threshold=s.threshold,
        k_votes=s.k_votes,
        max_rejudges=s.max_rejudges,
        max_refine_retries=s.max_refine_retries,
        refine_sampling=_build("search", SamplingParams, s.refine_max_new_tokens, s.refine_temperature, s.refine_top_p),
        judge_sampling=_build("search", SamplingParams, s.judge_max_new_tokens, m.judge_temperature, m.judge_top_p),
    )
    mixture = _build("mixture", spar.MixtureConfig, **dict(c.mixture))

    shared = dict.fromkeys(_SHARED_FIELDS, c.eval.ifeval_source)  # one IFEval source for every evaluation

    def model(name):
        x = c[name]
        return ModelSpec(x.path, x.dtype, x.param_dtype or None, x.remat, x.scan_layers, x.attention_impl)

    def train(name, kind):
        d = {k: c[name][k] for k in _TRAIN_KEYS}
        d["max_steps"] = d["max_steps"] or None
        d["max_grad_norm"] = d["max_grad_norm"] or None
        _build(name, TrainConfig, kind=kind, **d)  # validate now, not after hours of sampling
        return d

    run_config = RunConfig(
        workdir=c.workdir,
        seed=int(c.seed),
        stages=tuple(c.stages),
        actor=model("actor"),
        refiner=model("refiner"),
        mesh=MeshSpec(tuple(int(x) for x in c.mesh.shape), _build("mesh", normalize_rules, c.mesh.rules)),
        engine=EngineSpec(**dict(c.engine)),
        prompts=PromptSpec(**dict(c.prompts)),
        spar=SparSpec(**{**dict(c.spar), "ablations": tuple(c.spar.ablations)}),
        judge_kind=c.judge.kind,
        mining=mining,
        search=search,
        mixture=mixture,
        dpo=train("dpo", "dpo"),
        sft=train("sft", "sft"),
        sft0=train("sft0", "sft"),
        eval=EvalSpec(**dict(c.eval)),
        answer=AnswerSpec(tuple(c.answer.prompts), c.answer.prompts_file, int(c.answer.max_new_tokens)),
        study=StudySpec(**dict(c.study)),
        evals={n: _dataclass_from_section(cls, c[n], n, shared) for n, cls in _eval_settings().items()},
        judge_paths={n: c[n].judge_path for n in _eval_settings() if "judge_path" in c[n]},
        logging=LoggingSpec(**dict(c.logging)),
        hub=HubSpec(**dict(c.hub)),
        raw=c.to_dict(),
        defaults=default_config().to_dict(),
    )
    mesh_check.check_static(run_config)  # the device count is checked later: mesh_check.validate_against_devices
    return run_config


def _section(c: ml_collections.ConfigDict, dotted: str) -> ml_collections.ConfigDict:
    for part in dotted.split("."):
        c = c[part]
    return c
