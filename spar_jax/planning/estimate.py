"""The paper-scale plan: per-chip memory per phase and time per SPaR stage for one config on one TPU slice.

``make_plan(config, model_cfg, topology)`` reads the run config exactly as ``spar_jax.main`` does
(``spar_jax.config.parse``) and measures with :mod:`spar_jax.planning.memory` (shardings of the real model on an
abstract mesh), :mod:`spar_jax.planning.activations` (backward residuals of the real loss) and
:mod:`spar_jax.planning.timing`. Phases never overlap in a run (the runtime drops every engine before training), so
each phase must fit on its own:

- ``train actor (DPO)`` / ``train refiner (SFT)``: parameters, optimizer state, gradients (twice with gradient
  accumulation: the accumulator and one micro-batch's gradients), the compute-dtype copy of the weights when the
  param dtype differs, one FSDP-gathered layer, saved activations and one layer's remat working set, for one
  micro-batch of ``batch_size / grad_accum_steps`` examples (a DPO pair is one packed row of up to 2 × max_length
  with ``share_prompt``, planned at that longest, else two rows).
- ``initial SFT (sft0)``: the same for the Stage-0 SFT, when the run has one and its settings differ from ``sft``.
- ``sampling``: actor and refiner both resident (mining and tree search hold both engines), KV cache of the largest
  engine batch of any sampling stage, one prefill's working set, one gathered layer.
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp

from spar_jax import config as config_lib
from spar_jax.models.config import ModelConfig
from spar_jax.planning import activations as A
from spar_jax.planning import memory as M
from spar_jax.planning import timing as T
from spar_jax.planning.hardware import GiB, Topology
from spar_jax.planning.lengths import DEFAULTS, LengthProfile
from spar_jax.training import step as S
from spar_jax.training.trainer import TrainConfig

FIT_WARN = 0.9  # flag phases above this fraction of HBM: XLA needs room for its own temporaries
ATTENTION_IMPLS = ("auto", "xla", "splash", "cudnn")


def attention_kernel(config, role: str, flags: list[str]) -> str:
    """The attention kernel ``<role>.attention_impl`` selects on a TPU slice: "auto" is splash (the Pallas TPU
    kernel); "cudnn" is a GPU kernel and is planned as "xla" (flagged). Raises ValueError for an unknown value."""
    impl = config[role].get("attention_impl", "auto") if hasattr(config[role], "get") else "auto"
    if impl not in ATTENTION_IMPLS:
        raise ValueError(f"config key {role}.attention_impl: {impl!r}; choose one of {', '.join(ATTENTION_IMPLS)}")
    if impl == "cudnn":
        flags.append(
            f"{role}.attention_impl='cudnn' is a GPU kernel; a TPU slice runs 'xla' or 'splash' (planned as xla)"
        )
        return "xla"
    return "splash" if impl == "auto" else impl


@dataclasses.dataclass(frozen=True)
class Workload:
    """Planning assumptions that the config does not fix (printed with every plan)."""

    instruction_tokens: int = 256  # chat-templated instruction
    template_tokens: int = 320  # judge / refine template text around instruction and response
    fail_fraction: float = 0.5  # share of prompts whose mining finds a failing response (= trees)
    mfu: float = 0.4  # achieved fraction of peak FLOP/s in prefill and training
    hbm_efficiency: float = 0.7  # achieved fraction of HBM bandwidth in decode
    lengths: LengthProfile = DEFAULTS  # output-length distributions of the sampling stages


@dataclasses.dataclass(frozen=True)
class Phase:
    name: str
    items: tuple[tuple[str, int], ...]  # (what, bytes per chip)

    @property
    def total(self) -> int:
        return sum(b for _, b in self.items)


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    sequences: int  # decoded rows or trained sequences
    prompt_len: int  # bucketed prompt length (sampling) or padded sequence length (training)
    new_tokens: int  # max new tokens per sample (0 for training)
    batches: int  # engine batches (sampling) or optimizer steps (training)
    seconds: float
    mean_new: float = 0.0  # mean generated tokens per sample (sampling)
    utilization: float | None = None  # generated tokens / decode slot-steps (sampling)
    decode_steps: int = 0


@dataclasses.dataclass(frozen=True)
class Plan:
    topology: Topology
    mesh_shape: tuple[int, ...] | None
    model: ModelConfig
    param_count: int
    phases: tuple[Phase, ...]
    stages: tuple[Stage, ...]
    iterations: int
    flags: tuple[str, ...]
    workload: Workload
    batching: str = "static"

    @property
    def iteration_seconds(self) -> float:
        return sum(s.seconds for s in self.stages)


def _train_phase(name, kind, spec, settings: dict, model_cfg, mesh, rules, layout, flags, kernel: str) -> Phase:
    train = TrainConfig(kind=kind, **settings)
    tx = S.make_optimizer(
        S.make_schedule("constant", train.learning_rate, 1, 0.0),
        weight_decay=train.weight_decay,
        b1=train.adam_b1,
        b2=train.adam_b2,
        eps=train.adam_eps,
        max_grad_norm=train.max_grad_norm,
    )
    opt = M.optimizer_chip_bytes(model_cfg, mesh, rules, tx, dtype=spec.dtype, param_dtype=spec.param_dtype)
    # DPO pairs: two rows of max_length, or with share_prompt one packed row of up to 2 * max_length (the prompt
    # once, then both responses; planned at its longest, a prompt of one token).
    packed = kind == "dpo" and train.share_prompt
    rows = train.batch_size // train.grad_accum_steps * (2 if kind == "dpo" and not packed else 1)
    length = train.max_length * (2 if packed else 1)
    width = model_cfg.hidden_size
    for u in M.undivided(("batch",), (rows,), mesh, rules):
        flags.append(
            f"{name}: micro-batch of {rows} rows does not divide mesh axis {u[2]}={u[3]}; those chips "
            f"repeat the same rows"
        )
    local_rows = M.rows_per_chip(rows, length, width, mesh, rules)
    local_cfg, note = A.local_model_config(model_cfg, layout.local)
    if note:
        flags.append(f"{name}: {note}")
    act = A.training_activations(
        local_cfg,
        rows=local_rows,
        length=length,
        dtype=spec.dtype,
        param_dtype=spec.param_dtype,
        remat=spec.remat,
        chunk_size=train.logits_chunk_size,
    )
    act, note = A.with_kernel(
        act, local_cfg, rows=local_rows, length=length, dtype=spec.dtype, remat=spec.remat, kernel=kernel
    )
    if note:
        flags.append(f"{name}: {note}")
    items = [
        ("params", layout.chip_bytes),
        ("optimizer state", opt),
        (
            "gradients" + (" (x2: accumulation)" if train.grad_accum_steps > 1 else ""),
            layout.chip_bytes * (2 if train.grad_accum_steps > 1 else 1),
        ),
    ]
    items += _cast_items(spec, layout)
    items += [
        ("gathered layer (fsdp)", layout.gathered_layer_bytes),
        (
            f"activations saved ({local_rows} rows x {length}{', packed pairs' if packed else ''}, "
            f"remat={spec.remat}, {kernel} attention)",
            act.saved,
        ),
        ("activations: one layer's working set", act.working_set),
    ]
    return Phase(name, tuple(items))


def _cast_items(spec, layout) -> list[tuple[str, int]]:
    pbytes = jnp.dtype(spec.param_dtype or spec.dtype).itemsize
    cbytes = jnp.dtype(spec.dtype).itemsize
    if pbytes == cbytes:
        return []
    copy = (layout.layer_chip_bytes + layout.unembed_chip_bytes) * cbytes // pbytes
    return [(f"{spec.dtype} copy of the weights", copy)]


def sampling_shapes(cfg, w: Workload) -> list[dict]:
    """The four sampling stages of one iteration: sequences decoded, n per prompt, prompt bucket, new tokens."""
    m, s = cfg.mining, cfg.search
    prompts = cfg.prompts.num_train
    actor_new = m.actor_sampling.max_new_tokens
    judge_prompt = w.template_tokens + w.instruction_tokens + actor_new
    refine_prompt = judge_prompt + m.judge_sampling.max_new_tokens + 64
    refine_new = s.refine_sampling.max_new_tokens
    trees = math.ceil(prompts * w.fail_fraction)
    nodes = sum(s.branch * (1 if d == 0 else s.keep) for d in range(s.max_depth))  # worst case per tree
    shard = cfg.spar.shard_size  # prompts (mining) or roots (search) per engine call; a search call is one level
    return [
        dict(
            name="mine: actor samples",
            model="actor",
            kind="answer",
            sequences=prompts * m.n_samples,
            n=m.n_samples,
            prompt=w.instruction_tokens,
            new=actor_new,
            call=shard * m.n_samples,
        ),
        dict(
            name="mine: judge samples",
            model="refiner",
            kind="judgement",
            sequences=prompts * m.n_samples * m.k_votes,
            n=m.k_votes,
            prompt=judge_prompt,
            new=m.judge_sampling.max_new_tokens,
            call=shard * m.n_samples * m.k_votes,
        ),
        dict(
            name=f"search: refine (worst {nodes}/tree)",
            model="refiner",
            kind="refinement",
            sequences=trees * nodes,
            n=s.branch,
            prompt=refine_prompt,
            new=refine_new,
            call=shard * s.branch,
        ),
        dict(
            name="search: judge children",
            model="refiner",
            kind="judgement",
            sequences=trees * nodes * s.k_votes,
            n=s.k_votes,
            prompt=w.template_tokens + w.instruction_tokens + refine_new,
            new=s.judge_sampling.max_new_tokens,
            call=shard * s.branch * s.k_votes,
        ),
    ]


def make_plan(config, model_cfg: ModelConfig, topology: Topology, workload: Workload = Workload()) -> Plan:
    """Plan ``config`` (a ConfigDict, validated by ``spar_jax.config.parse``) for ``model_cfg`` on ``topology``."""
    cfg = config_lib.parse(config)
    flags: list[str] = []
    try:
        mesh = M.abstract_mesh(cfg.mesh.shape, topology.chips)
    except ValueError as e:
        flags.append(f"mesh: {e} ({topology.name} has {topology.chips} chips)")
        return Plan(
            topology, None, model_cfg, model_cfg.num_params(), (), (), cfg.spar.iterations, tuple(flags), workload
        )
    rules = cfg.mesh.rules
    actor = cfg.actor
    refiner = cfg.refiner
    if not cfg.prompts.num_train:
        flags.append(
            "prompts.num_train is 0 (every prompt of the source): stage times count no prompts; pass "
            "--config.prompts.num_train=N to plan N prompts"
        )
    layouts = {
        role: M.param_layout(model_cfg, mesh, rules, dtype=spec.dtype, param_dtype=spec.param_dtype)
        for role, spec in (("actor", actor), ("refiner", refiner))
    }
    for name, axis_name, dim, axis, size in layouts["actor"].undivided:
        flags.append(f"params: {name} dim {axis_name}={dim} does not divide mesh axis {axis}={size}; replicated on it")

    kernels = {role: attention_kernel(config, role, flags) for role in ("actor", "refiner")}
    phases = [
        _train_phase(
            "train actor (DPO)",
            "dpo",
            actor,
            cfg.dpo,
            model_cfg,
            mesh,
            rules,
            layouts["actor"],
            flags,
            kernels["actor"],
        ),
        _train_phase(
            "train refiner (SFT)",
            "sft",
            refiner,
            cfg.sft,
            model_cfg,
            mesh,
            rules,
            layouts["refiner"],
            flags,
            kernels["refiner"],
        ),
    ]
    sft0 = getattr(cfg, "sft0", None)  # the initial (Stage 0) SFT, when the run does one
    if (
        sft0 is not None
        and sft0 != cfg.sft
        and (cfg.spar.initial_sft_actor or cfg.spar.initial_sft_refiner or getattr(cfg.spar, "bootstrap_prompts", 0))
    ):
        phases.append(
            _train_phase(
                "initial SFT (sft0)",
                "sft",
                refiner,
                sft0,
                model_cfg,
                mesh,
                rules,
                layouts["refiner"],
                flags,
                kernels["refiner"],
            )
        )
    shapes = sampling_shapes(cfg, workload)
    # The engines hold their own copy of the weights in engine.dtype ("auto": bfloat16 on the TPU slices planned
    # here); training's master weights are not resident while sampling (the runtime drops one before the other).
    engine_dtype = "bfloat16" if cfg.engine.dtype == "auto" else cfg.engine.dtype
    engine_layouts = {
        role: M.param_layout(model_cfg, mesh, rules, dtype=engine_dtype, param_dtype=engine_dtype)
        for role in ("actor", "refiner")
    }
    phases.append(_sampling_phase(cfg, shapes, model_cfg, mesh, rules, engine_layouts, engine_dtype, flags, kernels))
    stages = _stage_times(
        cfg, shapes, model_cfg, mesh, rules, layouts, engine_layouts, engine_dtype, topology, workload
    )
    for p in phases:
        share = p.total / topology.chip.hbm_bytes
        if share > 1:
            flags.append(
                f"{p.name}: needs {p.total / GiB:.1f} GiB per chip, more than the "
                f"{topology.chip.hbm_bytes / GiB:.0f} GiB of HBM: DOES NOT FIT"
            )
        elif share > FIT_WARN:
            flags.append(f"{p.name}: uses {share:.0%} of HBM; XLA's temporaries may not fit")
    return Plan(
        topology,
        tuple(mesh.shape.values()),
        model_cfg,
        layouts["actor"].count,
        tuple(phases),
        tuple(stages),
        cfg.spar.iterations,
        tuple(flags),
        workload,
        cfg.engine.batching,
    )


def _context_limit(cfg, model_cfg) -> int:
    return cfg.engine.max_length or model_cfg.max_position_embeddings


def _sampling_phase(cfg, shapes, model_cfg, mesh, rules, layouts, engine_dtype, flags, kernels) -> Phase:
    limit = _context_limit(cfg, model_cfg)
    kv = prefill = 0
    for st in shapes:
        prompt = T.pow2_bucket(st["prompt"])
        if prompt + st["new"] > limit:
            flags.append(
                f"sampling: {st['name']} needs {prompt} prompt + {st['new']} new tokens, over the context limit {limit}"
            )
        prompts_per_batch = max(cfg.engine.batch_size // st["n"], 1)
        rows = prompts_per_batch * st["n"]
        for what, count in (("prompts", prompts_per_batch), ("decode rows", rows)):
            for u in M.undivided(("batch",), (count,), mesh, rules):
                message = (
                    f"sampling: {count} {what} per engine batch (n={st['n']}) do not divide mesh axis "
                    f"{u[2]}={u[3]}; those chips repeat the same rows (pick engine.batch_size so that "
                    f"batch_size // n and (batch_size // n) * n divide it)"
                )
                if message not in flags:
                    flags.append(message)
        kv = max(
            kv, M.kv_cache_chip_bytes(model_cfg, mesh, rules, rows=rows, length=prompt + st["new"], dtype=engine_dtype)
        )
        local_prompts = M.rows_per_chip(prompts_per_batch, prompt, model_cfg.hidden_size, mesh, rules)
        local_cfg, _ = A.local_model_config(model_cfg, layouts[st["model"]].local, layers=1)
        prefill = max(
            prefill,
            A.prefill_working_set(
                local_cfg, rows=local_prompts, length=prompt, dtype=engine_dtype, kernel=kernels[st["model"]]
            ),
        )
    items = [
        (f"params: actor engine ({engine_dtype})", layouts["actor"].chip_bytes),
        (f"params: refiner engine ({engine_dtype})", layouts["refiner"].chip_bytes),
    ]
    items += [
        ("gathered layer (fsdp)", layouts["actor"].gathered_layer_bytes),
        (f"KV cache (largest batch, {cfg.engine.batch_size} rows)", kv),
        (f"prefill: one layer's working set ({'/'.join(sorted(set(kernels.values())))} attention)", prefill),
    ]
    return Phase("sampling", tuple(items))


def _machine(topology, w, model_cfg, mesh, layout) -> T.Machine:
    chip = topology.chip
    return T.Machine(
        chips=topology.chips,
        peak_flops=chip.peak_flops,
        hbm_bandwidth=chip.hbm_bandwidth,
        mfu=w.mfu,
        hbm_efficiency=w.hbm_efficiency,
        params=layout.count,
        layers=model_cfg.num_hidden_layers,
        heads=model_cfg.num_attention_heads,
        head_dim=model_cfg.head_dim,
        weight_bytes_per_step=layout.step_read_bytes,
        tensor_shards=mesh.shape["tensor"],
    )


def _stage_times(
    cfg, shapes, model_cfg, mesh, rules, layouts, engine_layouts, engine_dtype, topology, w
) -> list[Stage]:
    stages = []
    for i, st in enumerate(shapes):
        machine = _machine(topology, w, model_cfg, mesh, engine_layouts[st["model"]])
        prompt = T.pow2_bucket(st["prompt"])
        rows = max(cfg.engine.batch_size // st["n"], 1) * st["n"]
        per_slot = M.kv_cache_chip_bytes(model_cfg, mesh, rules, rows=rows, length=64, dtype=engine_dtype) / 64
        lengths = w.lengths.draw(st["kind"], st["new"], st["sequences"], seed=i)
        t = T.sampling_stage_s(
            machine,
            lengths=lengths,
            n=st["n"],
            batch_rows=cfg.engine.batch_size,
            prompt_len=prompt,
            new_tokens=st["new"],
            kv_bytes_per_slot=per_slot,
            batching=cfg.engine.batching,
            call_samples=st["call"],
        )
        stages.append(
            Stage(
                st["name"],
                st["sequences"],
                prompt,
                st["new"],
                t.batches,
                t.seconds,
                t.mean_new,
                t.utilization,
                t.decode_steps,
            )
        )
    trees = math.ceil(cfg.prompts.num_train * w.fail_fraction)
    caps = cfg.mixture
    sft_examples = (
        caps.cap_refine
        + caps.cap_tree_judge_yes
        + caps.cap_tree_judge_no
        + caps.cap_actor_judge_no
        + caps.cap_actor_judge_yes
    )
    for name, settings, examples, rows_per, role, ref in (
        ("train: actor DPO (pairs <= trees)", cfg.dpo, trees, 2, "actor", True),
        ("train: refiner SFT (mixture caps)", cfg.sft, sft_examples, 1, "refiner", False),
    ):
        spec = cfg.actor if role == "actor" else cfg.refiner
        machine = _machine(topology, w, model_cfg, mesh, layouts[role])
        steps = settings["max_steps"] or settings["epochs"] * math.ceil(examples / settings["batch_size"])
        trained = min(steps * settings["batch_size"], settings["epochs"] * examples)
        seconds = T.training_stage_s(
            machine, sequences=trained * rows_per, length=settings["max_length"], passes=T.train_passes(spec.remat)
        )
        if ref:  # reference log-probs: one forward pass over the data
            seconds += T.training_stage_s(
                machine, sequences=examples * rows_per, length=settings["max_length"], passes=1
            )
        stages.append(Stage(name, trained * rows_per, settings["max_length"], 0, steps, seconds))
    return stages
