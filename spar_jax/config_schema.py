"""The config schema: every key a config file may set, its default and its one-line description, declared together.

``default_config()`` returns the schema as an ml-collections ConfigDict (the paper's values where the method defines
one); ``descriptions()`` the dotted key -> description record. The defaults of the mining, search, mixture, training
and evaluation settings come from their dataclasses, so each value has one source. ``spar_jax.config`` reads a config
into typed, validated values.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import ml_collections

from spar_jax import spar
from spar_jax.eval import calibration, followbench, llmbar, run_ifeval
from spar_jax.parallel import DEFAULT_RULES
from spar_jax.training.trainer import TrainConfig

STAGES = ("answer", "spar", "study", "evaluate", "refine_inference", "ifeval", "calibration", "llmbar", "followbench")
EVAL_STAGES = ("ifeval", "calibration", "llmbar", "followbench")
# Settings-dataclass fields the evaluations share, read from one key (eval.ifeval_source) instead of one per section.
_SHARED_FIELDS = ("prompts_source",)
_TRAIN_KEYS = (
    "learning_rate", "schedule", "warmup_ratio", "epochs", "max_steps", "batch_size", "grad_accum_steps",
    "max_grad_norm", "weight_decay", "beta", "sft_weight", "loss_type", "label_smoothing", "max_length",
    "max_prompt_length", "logits_chunk_size", "share_prompt", "save_every", "keep_checkpoints",
)  # fmt: skip


class _Schema:
    """A ConfigDict under construction that records each key's one-line description next to its default.

    ``s.key(name, default, "description")`` sets a key; ``s.section(name, "description")`` opens a sub-section
    sharing the same record. ``default_config()`` returns the ConfigDict, ``descriptions()`` the record
    (dotted key -> description), so a key and its description are declared in one statement.
    """

    def __init__(self, prefix: str = "", docs: dict[str, str] | None = None):
        self.dict = ml_collections.ConfigDict()
        self.prefix = prefix
        self.docs = {} if docs is None else docs

    def key(self, name: str, default: Any, doc: str) -> None:
        self.dict[name] = default
        self.docs[self.prefix + name] = doc

    def section(self, name: str, doc: str) -> "_Schema":
        child = _Schema(f"{self.prefix}{name}.", self.docs)
        self.dict[name] = child.dict
        self.docs[self.prefix + name] = doc
        return child


def _model_section(m: _Schema, path: str, path_doc: str) -> None:
    m.key("path", path, path_doc)
    m.key("dtype", "float32", "compute dtype: float32, bfloat16 or float16")
    m.key("param_dtype", "", 'parameter dtype; "" = same as dtype')
    m.key(
        "remat",
        "none",
        'activation checkpointing in training: "none", "full" (keep only layer inputs), "dots", "dots_no_batch"',
    )
    m.key(
        "attention_impl", "auto", 'attention kernel: "xla", "splash" (TPU Pallas), "cudnn" (GPU), "auto" (per backend)'
    )
    m.key(
        "scan_layers", True, "scan over layers; False: training unrolls the layer loop (faster on CPU, longer compiles)"
    )


def _train_section(t: _Schema, **values) -> None:
    d = TrainConfig()  # the defaults live in the dataclass (SPaR's actor DPO); the descriptions here
    t.key("learning_rate", d.learning_rate, "peak learning rate")
    t.key("schedule", d.schedule, '"linear" decay or "constant"; both after a linear warm-up')
    t.key("warmup_ratio", d.warmup_ratio, "share of the steps spent warming up")
    t.key("epochs", d.epochs, "passes over the data")
    t.key("max_steps", d.max_steps or 0, "optimizer steps; 0 = run the epochs")
    t.key("batch_size", d.batch_size, "examples (pairs for DPO) per optimizer step")
    t.key("grad_accum_steps", d.grad_accum_steps, "micro-batches accumulated per optimizer step")
    t.key("max_grad_norm", d.max_grad_norm or 0.0, "global gradient-norm clip; 0 = no clipping")
    t.key("weight_decay", d.weight_decay, "AdamW weight decay")
    t.key("beta", d.beta, "DPO inverse temperature beta")
    t.key("sft_weight", d.sft_weight, "weight of the SFT (NLL) term on the chosen response added to the DPO loss")
    t.key("loss_type", d.loss_type, 'DPO loss: "sigmoid" (the paper\'s), "ipo" or "hinge"')
    t.key("label_smoothing", d.label_smoothing, "DPO label smoothing (conservative DPO); 0 = none")
    t.key("max_length", d.max_length, "tokens per example, prompt + response; longer ones are truncated")
    t.key("max_prompt_length", d.max_prompt_length, "tokens kept of the prompt")
    t.key(
        "logits_chunk_size",
        d.logits_chunk_size,
        "sequence positions per chunk of the vocabulary projection (bounds memory)",
    )
    t.key(
        "share_prompt", d.share_prompt, "DPO: a pair as one row, its shared prompt computed once (exact; fewer tokens)"
    )
    t.key("save_every", d.save_every, "optimizer steps between Orbax checkpoints")
    t.key("keep_checkpoints", d.keep_checkpoints, "Orbax checkpoints kept on disk")
    t.dict.update(values)


def _schema() -> _Schema:
    root = _Schema()
    root.key("workdir", "runs/default", "directory of every artifact of the run (a rerun resumes there)")
    root.key("seed", 0, "seed every stage derives its own seed from")
    root.key("stages", ("spar",), f"stages to run, in order: {', '.join(STAGES)}")
    root.key(
        "on_change",
        "stop",
        'a finished stage whose recorded inputs differ: "stop" (exit 2, naming the keys) '
        'or "rerun" it and every later stage',
    )

    _model_section(
        root.section("actor", "the actor (policy) model"),
        "demo",
        'HF directory, .gguf file, hub id (org/name[@revision]), or "demo" (SmolLM2-135M-Instruct)',
    )
    _model_section(
        root.section("refiner", "the refiner (judge and reviser) model"),
        "",
        '"" = start from the actor\'s checkpoint; else as actor.path',
    )

    mesh = root.section("mesh", "device mesh and parameter sharding")
    mesh.key("shape", (-1, 1, 1), "(data, fsdp, tensor) axis sizes; -1 = the remaining devices")
    mesh.key(
        "rules",
        tuple((name, tuple(axes)) for name, axes in DEFAULT_RULES),
        "logical axis name -> mesh axes, for parameters and activations",
    )

    e = root.section("engine", "the batched sampler")
    e.key("batch_size", 32, "sequences per decode batch (decode slots with continuous batching)")
    e.key(
        "batching",
        "static",
        '"static" bucketed batches, or "continuous": a finished row\'s slot takes the next '
        "sample (opt-in until measured on pod-scale workloads)",
    )
    e.key("dtype", "auto", "the engine's weight copy: \"auto\" = bfloat16 on TPU/GPU, the model's dtype on CPU")
    e.key("max_length", 0, "context limit, prompt + new tokens; 0 = the model's max_position_embeddings")
    e.key("truncate", "error", 'over-long prompts: "error", or "left" (drop the oldest tokens; counted)')
    e.key("progress", True, "tqdm bars for sampling and training (stage and shard lines print regardless)")

    p = root.section("prompts", "the training and held-out prompts")
    p.key("source", "generated", '"generated" (offline verifiable prompts) or a JSONL path / datasets name')
    p.key("field", "prompt", "the instruction field of source records")
    p.key("num_train", 1000, "the training pool; 0 = every prompt of the source")
    p.key(
        "per_iteration",
        0,
        "prompts mined per iteration: iteration t takes the t-th disjoint slice of the pool, "
        "as the method draws fresh prompts each iteration; 0 = the pool split evenly over the iterations",
    )
    p.key("num_heldout", 100, "generated held-out prompts scored by the IFEval checker (0 = none)")
    p.key("constraint_types", "", 'generated prompts: comma-separated IFEval ids to draw from ("" = every type)')
    p.key("max_constraints", 4, "generated prompts: the most constraints per prompt (1-4)")
    p.key("heldout_types", "", "IFEval ids reserved for out-of-distribution held-out prompts, never in training")
    p.key("evolve", False, "rewrite source prompts into constraint-heavy ones (14-type taxonomy) first")
    p.key("evolve_model", "", 'checkpoint of the evolving model ("" = the actor)')
    p.key("evolve_max_new_tokens", 256, "token budget of one prompt rewrite")

    s = root.section("spar", "the SPaR loop")
    s.key("iterations", 3, "SPaR iterations (mine, search, data, train, evaluate)")
    s.key("shard_size", 64, "prompts per resumable shard of the sampling stages")
    s.key("templates_file", "", 'JSON with "judge"/"refine" templates overriding ours; "" = ours')
    s.key(
        "initial_sft_actor", "", 'SFT data (JSONL file or hub dataset id) for the actor before iteration 1; "" = skip'
    )
    s.key("initial_sft_refiner", "", 'SFT data for the refiner before iteration 1 (as initial_sft_actor); "" = skip')
    s.key("eval_base", True, "evaluate the starting actor as iteration 0")
    s.key(
        "ablations",
        (),
        "the paper's ablations run at iteration 1 beside the loop (same mined samples and "
        'starting models): "no_tree" (one refinement per root, kept if judged a pass), "no_refine" (pairs of '
        "independent samples, judged Yes > judged No); each trains its own actor, evaluated like an iteration",
    )
    s.key(
        "bootstrap_prompts",
        0,
        "offline Stage 0: generated prompts whose checker-fixed responses give initial SFT data; 0 = off",
    )
    s.key(
        "bootstrap_responses", "synthetic", 'Stage 0 drafts: "synthetic" (rule-made) or "actor" (samples of the actor)'
    )
    s.key("bootstrap_per_prompt", 2, "Stage 0 drafts per prompt")
    s.key("bootstrap_actor", False, "also SFT the actor on the Stage 0 fixed responses")
    s.key("bootstrap_refine_share", 0.5, "refinements' share of the refiner's Stage 0 examples (rest: judgments)")

    j = root.section("judge", "who labels answers and tree nodes")
    j.key(
        "kind",
        "model",
        '"model" (the refiner, k votes), "rules" (the IFEval checker; needs prompts with checkable '
        'constraints; an upper bound), "hybrid" (the checker where every constraint is checkable)',
    )

    m = root.section("mining", "Stage 1: actor samples judged by the refiner")
    md = spar.MiningConfig()  # the method's defaults live in the dataclasses; the descriptions here
    m.key("n_samples", md.n_samples, "actor responses per prompt")
    m.key("k_votes", md.k_votes, "judge votes per response (majority decides)")
    m.key("actor_temperature", md.actor_sampling.temperature, "actor sampling temperature")
    m.key("actor_top_p", md.actor_sampling.top_p, "actor nucleus sampling top-p")
    m.key("actor_max_new_tokens", md.actor_sampling.max_new_tokens, "actor token budget per response")
    m.key("judge_temperature", md.judge_sampling.temperature, "judge sampling temperature (mining and search)")
    m.key("judge_top_p", md.judge_sampling.top_p, "judge nucleus sampling top-p (mining and search)")
    m.key("judge_max_new_tokens", md.judge_sampling.max_new_tokens, "judge token budget per vote in mining")
    m.key(
        "truncated_roots",
        md.truncated_roots,
        "True lets samples cut by actor_max_new_tokens be roots (tiny test models)",
    )

    t = root.section("search", "Stage 2: tree-search refinement of failing responses")
    sd = spar.SearchConfig()
    t.key("strategy", sd.strategy, '"bfs" (level by level) or "dfs"')
    t.key("branch", sd.branch, "children per expanded node")
    t.key("keep", sd.keep, "children kept for the next level (BFS) / recursed into (DFS)")
    t.key("max_depth", sd.max_depth, "deepest refinement level")
    t.key("threshold", sd.threshold, "a child passes when its value V (share of yes votes) exceeds this")
    t.key("k_votes", sd.k_votes, "judge votes per child")
    t.key("max_rejudges", sd.max_rejudges, "re-judging rounds for a tied child before it is dropped")
    t.key("max_refine_retries", sd.max_refine_retries, "extra rounds for unparseable refinements")
    t.key("refine_temperature", sd.refine_sampling.temperature, "refiner sampling temperature")
    t.key("refine_top_p", sd.refine_sampling.top_p, "refiner nucleus sampling top-p")
    t.key("refine_max_new_tokens", sd.refine_sampling.max_new_tokens, "refiner token budget per refinement")
    t.key("judge_max_new_tokens", sd.judge_sampling.max_new_tokens, "judge token budget per vote in the search")

    x = root.section("mixture", "Stage 3: caps of the refiner's five SFT pools")
    xd = spar.MixtureConfig()
    x.key("cap_refine", xd.cap_refine, "refinement examples (last step of each passing path)")
    x.key("cap_tree_judge_yes", xd.cap_tree_judge_yes, "judgments of passing tree nodes")
    x.key("cap_tree_judge_no", xd.cap_tree_judge_no, "judgments of failing tree nodes")
    x.key("cap_actor_judge_no", xd.cap_actor_judge_no, "judgments of failing actor samples")
    x.key("cap_actor_judge_yes", xd.cap_actor_judge_yes, "judgments of passing actor samples")

    _train_section(root.section("dpo", "DPO training of the actor on the tree pairs"))
    sft = dict(learning_rate=2e-6, schedule="constant", epochs=3, max_length=4096, max_prompt_length=3072)
    _train_section(root.section("sft", "SFT of the refiner on the mixture"), **sft)
    _train_section(root.section("sft0", "the initial (Stage 0) SFT of actor and refiner"), **sft)

    v = root.section("eval", "the loop's per-iteration evaluation")
    v.key(
        "ifeval_source",
        "",
        'the IFEval prompts of every stage (a JSONL path or "google/IFEval"); "" = the loop skips IFEval proper',
    )
    v.key("ifeval_limit", 0, "IFEval prompts scored; 0 = all")
    v.key("max_new_tokens", 1024, "actor token budget per evaluation response")
    v.key("ifeval_final_only", False, "IFEval proper after the last iteration only (held-out prompts every time)")

    st = root.section("study", 'the "study" stage')
    st.key("results_dir", "results/study", 'where the "study" stage writes its committed tables, plot and responses')
    st.key("rules_run", True, 'also run the loop with judge.kind="rules" (the judge-quality upper bound)')

    for name, cls in _eval_settings().items():  # one section per evaluation, mirroring its settings dataclass
        _section_from_dataclass(root.section(name, _EVAL_SECTIONS[name]), cls(), skip=_SHARED_FIELDS)

    a = root.section("answer", "the answer stage: the actor answers a few prompts")
    a.key("prompts", ("What is the capital of France?",), "prompts to answer")
    a.key("prompts_file", "", 'JSONL with a "prompt" field; overrides answer.prompts when set')
    a.key("max_new_tokens", 128, "token budget per answer")

    g = root.section("logging", "where the run's scalars go besides report.md, metrics.jsonl and TensorBoard")
    g.key("wandb_project", "", 'Weights & Biases project the report scalars are logged to; "" = off (extra "wandb")')

    h = root.section("hub", "pushing each iteration's models (and data) to the Hugging Face Hub")
    h.key(
        "push_to", "", 'repo prefix "org/name": pushes org/name-actor, org/name-refiner after each iteration; "" = off'
    )
    h.key("push_data", False, "also push the DPO and refiner SFT data to the dataset repo org/name-data")
    h.key("private", True, "create the repositories private")
    return root


def default_config() -> ml_collections.ConfigDict:
    """Every key a config file may set, with its default."""
    return _schema().dict


def descriptions() -> dict[str, str]:
    """Dotted key (sections too) -> its one-line description."""
    return _schema().docs


_EVAL_SECTIONS = {
    "ifeval": "the ifeval stage: IFEval scores of the actor",
    "calibration": "the calibration stage: the refiner's judgments against the IFEval checker",
    "llmbar": "the llmbar stage: the refiner as judge on LLMBar pairs",
    "followbench": "the followbench stage: FollowBench scores of the actor, judged by a judge model",
}


def _eval_settings() -> dict[str, type]:
    return {
        "ifeval": run_ifeval.IFEvalRunConfig,
        "calibration": calibration.CalibrationConfig,
        "llmbar": llmbar.LLMBarConfig,
        "followbench": followbench.FollowBenchConfig,
    }


def field_docs(cls: type) -> dict[str, str]:
    """A settings dataclass's field descriptions: ``metadata["help"]``, else the docstring's ````name````: sentence."""
    text = " ".join((cls.__doc__ or "").split())
    docs = {m.group(1): m.group(2).strip().rstrip(".") for m in re.finditer(r"``(\w+)``: (.*?)(?= ``\w+``:|$)", text)}
    for f in dataclasses.fields(cls):
        if f.metadata.get("help"):
            docs[f.name] = f.metadata["help"]
    return docs


def _section_from_dataclass(section: _Schema, obj, skip: tuple[str, ...] = ()) -> None:
    docs = field_docs(type(obj))
    for f in dataclasses.fields(obj):
        if f.name in skip:
            continue
        value = getattr(obj, f.name)
        doc = docs.get(f.name, "")
        if dataclasses.is_dataclass(value):
            _section_from_dataclass(section.section(f.name, doc), value)
        else:
            section.key(f.name, value, doc)
    if "judge_path" not in section.dict and "judge_name" in section.dict:
        section.key("judge_path", "", 'checkpoint (or hub id) of a separate judge model; "" = the refiner')
