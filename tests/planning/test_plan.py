"""The paper-scale planner (spar_jax.plan / spar_jax.planning) against hand computation, its flags, the paper
configs, and an ahead-of-time lowering + compile of the sharded train step and decode loop on 8 fake devices."""

import dataclasses
import importlib.util
import pathlib
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from spar_jax import config as config_lib
from spar_jax.models.config import config_from_hf_dict
from spar_jax.parallel import DEFAULT_RULES, make_mesh
from spar_jax.planning import activations as A
from spar_jax.planning import memory as M
from spar_jax.planning import timing as T
from spar_jax.planning.estimate import Workload, make_plan
from spar_jax.planning.hardware import GiB, parse_topology
from spar_jax.planning.report import render
from spar_jax.training import step as S

ROOT = pathlib.Path(__file__).resolve().parents[2]
PAPER_CONFIGS = ["llama3_8b", "llama3_70b", "glm4_9b", "mistral_7b"]
TINY = dict(
    model_type="llama",
    vocab_size=256,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=512,
)


def _load(name):
    spec = importlib.util.spec_from_file_location(f"cfg_{name}", ROOT / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- hardware table ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, chips, hosts, accel, hbm_gib",
    [
        ("v5p-128", 64, 16, "v5p-128", 95),
        ("v4-32", 16, 4, "v4-32", 32),
        ("v5e-16", 16, 2, "v5litepod-16", 16),
        ("v5litepod-4", 4, 1, "v5litepod-4", 16),
        ("v6e-8", 8, 1, "v6e-8", 32),
        ("v6e-256", 256, 32, "v6e-256", 32),
    ],
)
def test_topologies(name, chips, hosts, accel, hbm_gib):
    t = parse_topology(name)
    assert (t.chips, t.hosts, t.accelerator_type, t.chip.hbm_bytes) == (chips, hosts, accel, hbm_gib * GiB)


def test_topology_errors_name_the_accepted_forms():
    with pytest.raises(ValueError, match=r"expected one of v4-N, v5e-N, v5p-N, v6e-N"):
        parse_topology("tpu-8")
    with pytest.raises(ValueError, match="count TensorCores"):
        parse_topology("v4-7")


# -- per-chip memory vs hand computation -------------------------------------------------------------------------


def test_tiny_model_bytes_per_chip_by_hand():
    cfg = config_from_hf_dict(TINY)
    mesh = M.abstract_mesh((1, -1, 2), 8)  # (data 1, fsdp 4, tensor 2)
    layout = M.param_layout(cfg, mesh, DEFAULT_RULES, dtype="bfloat16", param_dtype="float32")
    per_layer = 64 * 4 * 16 * 2 + 64 * 2 * 16 * 2 + 3 * 64 * 128 + 2 * 64  # q,o + k,v + gate,up,down + 2 norms
    count = 2 * 256 * 64 + 64 + 2 * per_layer
    assert layout.count == count == cfg.num_params()
    assert layout.total_bytes == 4 * count
    # Every matrix dimension divides its mesh axes, so matrices are split 8 ways; norms are replicated.
    norms = 64 + 2 * 2 * 64
    assert layout.chip_bytes == (count - norms) * 4 // 8 + norms * 4
    assert layout.local == {"vocab": 128, "heads": 2, "kv_heads": 1, "mlp": 64}
    assert layout.undivided == ()
    # One layer's matrices gathered over fsdp, in bf16, still split over tensor=2 (norms are never split).
    assert layout.gathered_layer_bytes == (per_layer - 128) // 2 * 2
    tx = S.make_optimizer(
        S.make_schedule("constant", 2e-7, 1, 0.0), weight_decay=0.0, b1=0.9, b2=0.999, eps=1e-8, max_grad_norm=1.0
    )
    # AdamW: mu and nu shaped and sharded like the params, plus two int32 step counters (Adam, schedule).
    assert (
        M.optimizer_chip_bytes(cfg, mesh, DEFAULT_RULES, tx, dtype="bfloat16", param_dtype="float32")
        == 2 * layout.chip_bytes + 2 * 4
    )
    # KV cache [L=2, rows=8, S=32, K=2, D=16] bf16: rows over fsdp=4, kv heads over tensor=2; k and v.
    assert M.kv_cache_chip_bytes(cfg, mesh, DEFAULT_RULES, rows=8, length=32, dtype="bfloat16") == 2 * (
        2 * 2 * 32 * 1 * 16 * 2
    )


def test_parameter_bytes_are_exactly_total_over_shards_when_everything_divides():
    # With norms split over fsdp x tensor too, every array divides the 8 chips: bytes per chip == total / 8.
    rules = tuple((n, ("fsdp", "tensor")) if n == "norm" else (n, a) for n, a in DEFAULT_RULES)
    cfg = config_from_hf_dict(TINY)
    layout = M.param_layout(cfg, M.abstract_mesh((1, 4, 2), 8), rules, dtype="float32", param_dtype=None)
    assert layout.chip_bytes * 8 == layout.total_bytes


def test_undivided_dimensions_are_reported():
    cfg = config_from_hf_dict(
        dict(TINY, num_attention_heads=9, num_key_value_heads=3, head_dim=8, hidden_size=72, intermediate_size=144)
    )
    layout = M.param_layout(cfg, M.abstract_mesh((1, 4, 2), 8), DEFAULT_RULES, dtype="float32", param_dtype=None)
    flagged = {(p, name, dim, axis) for p, name, dim, axis, _ in layout.undivided}
    assert ("layers.q", "heads", 9, "tensor") in flagged and ("layers.k", "kv_heads", 3, "tensor") in flagged
    assert layout.local["heads"] == 9 and layout.local["mlp"] == 72
    assert M.undivided(("batch",), (6,), M.abstract_mesh((1, 4, 2), 8), DEFAULT_RULES) == [("batch", 6, "fsdp", 4)]


def test_activations_follow_the_remat_policy():
    cfg = config_from_hf_dict(TINY)
    kw = dict(length=64, dtype="bfloat16", param_dtype="float32", chunk_size=16)
    deeper = dataclasses.replace(cfg, num_hidden_layers=3)
    full2 = A.training_activations(cfg, rows=4, remat="full", **kw)
    full3 = A.training_activations(deeper, rows=4, remat="full", **kw)
    # Full remat keeps exactly the residual stream [T, E] (bf16) of each extra layer per row, nothing else.
    assert full3.saved - full2.saved == 4 * 64 * 64 * 2
    assert full3.working_set == full2.working_set > 0
    none2 = A.training_activations(cfg, rows=4, remat="none", **kw)
    assert none2.working_set == 0
    assert A.training_activations(cfg, rows=8, remat="none", **kw).saved == 2 * none2.saved  # linear in rows
    dots = A.training_activations(cfg, rows=4, remat="dots", **kw)
    assert full2.saved < dots.saved < none2.saved
    # The float32 attention scores alone ([H, T, T] per row and layer) are part of what "none" keeps.
    assert none2.saved > 4 * 2 * 4 * 64 * 64 * 4


def test_prefill_working_set_formula():
    cfg = config_from_hf_dict(TINY)
    got = A.prefill_working_set(cfg, rows=3, length=32, dtype="bfloat16")
    assert got == 3 * (4 * 32 * 32 * (4 + 2) + 32 * ((2 * 4 + 2 * 2) * 16 + 3 * 128 + 2 * 64) * 2)


def test_prefill_working_set_of_a_flash_kernel_has_no_scores():
    cfg = config_from_hf_dict(TINY)
    got = A.prefill_working_set(cfg, rows=3, length=32, dtype="bfloat16", kernel="splash")
    assert got == 3 * (4 * 32 * 4 + 32 * ((2 * 4 + 2 * 2) * 16 + 3 * 128 + 2 * 64) * 2)


def test_score_residuals_are_what_xla_attention_stores():
    """The analytic score residuals equal the [.., G * block, keys] leaves of the real loss's vjp residuals (one
    layer, remat none, T = 200 in query blocks of 50: no other dimension is 100 or a multiple of 50)."""
    cfg = config_from_hf_dict(dict(TINY, num_hidden_layers=1))
    rows, t, g = 2, 200, 2
    from spar_jax.models.pretrained import abstract_model

    model = abstract_model(cfg, dtype="bfloat16", param_dtype="float32", remat="none")
    from flax import nnx

    graphdef, state, rest = nnx.split(model, nnx.Param, ...)
    params, state_def = nnx.to_pure_dict(state), jax.tree.structure(state)
    spec = S.LossSpec("dpo", chunk_size=16)

    def forward(p, ids, mask):
        m = nnx.merge(graphdef, S.params_to_state(p, state_def), rest)
        mb = {
            "input_ids": ids,
            "loss_mask": mask,
            "attention_mask": mask,
            "valid": jax.numpy.ones((1,), bool),
            "ref_logps": jax.numpy.zeros((1, 2)),
        }
        return S.micro_loss(m, mb, {"pairs": 1.0, "tokens": float(rows * t)}, spec)[0]

    ids = jax.ShapeDtypeStruct((rows, t), "int32")
    mask = jax.ShapeDtypeStruct((rows, t), "bool")
    res = jax.eval_shape(lambda p, i, m: jax.vjp(lambda q: forward(q, i, m), p)[1], params, ids, mask)
    scores = sum(
        x.size * x.dtype.itemsize
        for x in jax.tree.leaves(res)
        if x.ndim >= 2 and x.shape[-2] == g * 50 and x.shape[-1] % 50 == 0
    )
    assert scores == A.score_residual_bytes(cfg, rows=rows, length=t, dtype="bfloat16") > 0


def test_flash_kernel_activations_drop_the_scores_per_remat_policy():
    cfg = config_from_hf_dict(TINY)
    kw = dict(rows=4, length=64, dtype="bfloat16")
    per_layer = A.score_residual_bytes(cfg, **kw) - A.flash_residual_bytes(cfg, rows=4, length=64)
    for remat in ("none", "full"):
        act = A.training_activations(cfg, remat=remat, param_dtype="float32", chunk_size=16, **kw)
        flash, note = A.with_kernel(act, cfg, remat=remat, kernel="splash", **kw)
        assert note == "" and A.with_kernel(act, cfg, remat=remat, kernel="xla", **kw)[0] == act
        if remat == "none":  # every layer's scores were saved
            assert (flash.saved, flash.working_set) == (act.saved - 2 * per_layer, act.working_set)
        else:  # one layer's scores were the working set's
            assert (flash.saved, flash.working_set) == (act.saved, act.working_set - per_layer)
    dots = A.training_activations(cfg, remat="dots", param_dtype="float32", chunk_size=16, **kw)
    kept, note = A.with_kernel(dots, cfg, remat="dots", kernel="splash", **kw)
    assert kept == dots and "upper bound for splash" in note


def test_attention_impl_choice_for_a_tpu_plan():
    from spar_jax.planning.estimate import attention_kernel

    c = config_lib.default_config()
    flags = []
    assert attention_kernel(c, "actor", flags) == "splash" and flags == []  # "auto" on TPU
    c.refiner.attention_impl = "xla"
    assert attention_kernel(c, "refiner", flags) == "xla"
    c.actor.attention_impl = "cudnn"
    assert attention_kernel(c, "actor", flags) == "xla" and "GPU kernel" in flags[0]
    c.actor.attention_impl = "flash"
    with pytest.raises(ValueError, match="actor.attention_impl: 'flash'; choose one of"):
        attention_kernel(c, "actor", flags)


def test_xla_attention_plans_more_sampling_memory_than_splash():
    base = {"mesh.shape": (1, -1, 2), "engine.batch_size": 60}
    splash = make_plan(_tiny_config(**base), config_from_hf_dict(TINY), parse_topology("v5p-16"), SHORT)
    xla = make_plan(
        _tiny_config(**base, **{"actor.attention_impl": "xla", "refiner.attention_impl": "xla"}),
        config_from_hf_dict(TINY),
        parse_topology("v5p-16"),
        SHORT,
    )
    prefill = lambda p: [b for what, b in p.phases[-1].items if what.startswith("prefill")][0]  # noqa: E731
    assert prefill(xla) > prefill(splash)
    assert xla.phases[0].total > splash.phases[0].total  # no scores in the full-remat working set


def test_timing_by_hand():
    m = T.Machine(
        chips=4,
        peak_flops=100e12,
        hbm_bandwidth=1e12,
        mfu=0.5,
        hbm_efficiency=0.5,
        params=10**9,
        layers=2,
        heads=4,
        head_dim=8,
        weight_bytes_per_step=2 * 10**9,
        tensor_shards=1,
    )
    # Training: 3 forward-equivalents of 2*N*tokens + 4*L*H*D*tokens*T over chips*peak*mfu.
    tokens = 16 * 128
    flops = 3 * (2e9 * tokens + 4 * 2 * 4 * 8 * tokens * 128)
    assert T.training_stage_s(m, sequences=16, length=128, passes=3) == pytest.approx(flops / (4 * 100e12 * 0.5))
    # Decode is bandwidth bound here: (weights + KV at the mean length) / (bandwidth * efficiency) per step.
    per_step = (2e9 + 1000 * (64 + 10 / 2)) / (1e12 * 0.5)
    prefill = (2e9 * 2 * 64 + 4 * 2 * 4 * 8 * 2 * 64 * 64) / (4 * 100e12 * 0.5)
    got = T.decode_batch_s(m, prompts=2, rows=8, prompt_len=64, new_tokens=10, kv_bytes_per_slot=1000)
    assert got == pytest.approx(prefill + 10 * per_step)
    # A stage from its samples' lengths: static batches of 8 rows (2 prompts x n=4) run to their longest sample,
    # reading the cache up to the batch's mean length; continuous slots run until the last sample ends, every step
    # over prompt_len + new_tokens slots.
    lengths = np.array([3, 10, 2, 2, 5, 1, 1, 1, 4, 4, 4, 4])
    step = lambda context: T.decode_step_s(m, rows=8, context=context, kv_bytes_per_slot=1000)  # noqa: E731
    fill = T.prefill_s(m, prompts=3, prompt_len=64)
    static = T.sampling_stage_s(
        m, lengths=lengths, n=4, batch_rows=8, prompt_len=64, new_tokens=10, kv_bytes_per_slot=1000, batching="static"
    )
    assert (static.batches, static.decode_steps) == (2, 9 + 3)
    assert static.seconds == pytest.approx(fill + 9 * step(64 + 10 / 2) + 3 * step(64 + 4 / 2))
    assert static.utilization == pytest.approx(41 / (8 * 10 + 8 * 4)) and static.mean_new == pytest.approx(41 / 12)
    cont = T.sampling_stage_s(
        m,
        lengths=lengths,
        n=4,
        batch_rows=8,
        prompt_len=64,
        new_tokens=10,
        kv_bytes_per_slot=1000,
        batching="continuous",
    )
    assert cont.decode_steps == 9  # the sample of 10 tokens, started at once, ends last
    assert cont.seconds == pytest.approx(fill + 9 * step(64 + 10))
    assert cont.utilization == pytest.approx(41 / (8 * 9 + 12))
    # In engine calls of 8 samples, the second call (four samples of 4) starts after the first call's drain.
    calls = T.sampling_stage_s(
        m,
        lengths=lengths,
        n=4,
        batch_rows=8,
        prompt_len=64,
        new_tokens=10,
        kv_bytes_per_slot=1000,
        batching="continuous",
        call_samples=8,
    )
    assert calls.decode_steps == 9 + 3 and calls.utilization == pytest.approx(41 / (8 * 9 + 8 + 8 * 3 + 4))
    assert T.pow2_bucket(300) == 512 and T.pow2_bucket(256) == 256 and T.pow2_bucket(3) == 16


# -- whole plans: flags ------------------------------------------------------------------------------------------

SHORT = Workload(instruction_tokens=32, template_tokens=32)


def _tiny_config(**overrides):
    c = config_lib.default_config()
    c.actor.dtype = c.refiner.dtype = "bfloat16"
    c.prompts.num_train = 64
    c.mining.actor_max_new_tokens = c.mining.judge_max_new_tokens = 64
    c.search.refine_max_new_tokens = c.search.judge_max_new_tokens = 64
    for key, value in overrides.items():
        section, leaf = key.split(".")
        c[section][leaf] = value
    return c


def test_plan_of_a_fitting_tiny_run_has_no_flags():
    plan = make_plan(
        _tiny_config(**{"mesh.shape": (1, -1, 2), "engine.batch_size": 60}),
        config_from_hf_dict(TINY),
        parse_topology("v5p-16"),
        SHORT,
    )
    assert plan.mesh_shape == (1, 4, 2)
    assert plan.flags == ()
    assert [p.name for p in plan.phases] == ["train actor (DPO)", "train refiner (SFT)", "sampling"]
    train = dict(plan.phases[0].items)
    assert (
        train["params"]
        == M.param_layout(
            config_from_hf_dict(TINY), M.abstract_mesh((1, 4, 2), 8), DEFAULT_RULES, dtype="bfloat16", param_dtype=None
        ).chip_bytes
    )
    assert [s.name.split(":")[0] for s in plan.stages] == ["mine"] * 2 + ["search"] * 2 + ["train"] * 2
    assert "flags: none" in render(plan)


def test_plan_has_an_initial_sft_phase_only_when_the_run_does_one():
    base = {"mesh.shape": (1, -1, 2), "engine.batch_size": 60, "sft0.batch_size": 8}
    without = make_plan(_tiny_config(**base), config_from_hf_dict(TINY), parse_topology("v5p-16"), SHORT)
    assert "initial SFT (sft0)" not in [p.name for p in without.phases]
    plan = make_plan(
        _tiny_config(**base, **{"spar.initial_sft_actor": "sft.jsonl"}),
        config_from_hf_dict(TINY),
        parse_topology("v5p-16"),
        SHORT,
    )
    sft0 = next(p for p in plan.phases if p.name == "initial SFT (sft0)")
    assert dict(sft0.items)["activations saved (2 rows x 4096, remat=none, splash attention)"] > 0  # 8 over fsdp=4


def test_plan_flags_what_does_not_divide_the_mesh():
    plan = make_plan(
        _tiny_config(**{"mesh.shape": (3, -1, 1)}), config_from_hf_dict(TINY), parse_topology("v5p-16"), SHORT
    )
    assert plan.phases == () and plan.mesh_shape is None
    assert re.search(r"mesh: mesh shape .* does not divide 8 devices", plan.flags[0])
    plan = make_plan(
        _tiny_config(**{"mesh.shape": (1, -1, 1), "dpo.batch_size": 6, "engine.batch_size": 32}),
        config_from_hf_dict(TINY),
        parse_topology("v5p-16"),
        SHORT,
    )
    text = "\n".join(plan.flags)
    assert "train actor (DPO): micro-batch of 6 rows does not divide mesh axis fsdp=8" in text  # packed pairs
    assert "sampling: 6 prompts per engine batch (n=5) do not divide mesh axis fsdp=8" in text
    plan = make_plan(
        _tiny_config(**{"mesh.shape": (1, -1, 1), "dpo.batch_size": 6, "dpo.share_prompt": False}),
        config_from_hf_dict(TINY),
        parse_topology("v5p-16"),
        SHORT,
    )
    assert "train actor (DPO): micro-batch of 12 rows does not divide mesh axis fsdp=8" in "\n".join(plan.flags)


def test_paper_70b_does_not_fit_a_small_slice():
    module = _load("llama3_70b")
    plan = make_plan(module.get_config(), config_from_hf_dict(module.HF_CONFIG), parse_topology("v5e-8"))
    assert plan.mesh_shape == (1, 2, 4)
    assert any("train actor (DPO): needs" in f and "DOES NOT FIT" in f for f in plan.flags)
    params = dict(plan.phases[0].items)["params"]
    assert params > 70e9 * 4 / 8  # float32 master weights over 8 chips


# -- paper configs -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_configs_parse_and_match_their_architecture(name):
    module = _load(name)
    cfg = config_lib.parse(module.get_config())
    assert cfg.dpo["learning_rate"] == module.PAPER["dpo"]["learning_rate"] == 2e-7
    assert cfg.dpo["beta"] == 0.1 and cfg.dpo["max_length"] == 2048 and cfg.dpo["batch_size"] == 32
    assert cfg.sft["learning_rate"] == 2e-6 and cfg.sft["max_length"] == 4096
    assert cfg.mining.n_samples == 5 and cfg.search.branch == 3 and cfg.spar.iterations == 3
    assert cfg.actor.param_dtype == "float32" and cfg.actor.dtype == "bfloat16"
    model = config_from_hf_dict(module.HF_CONFIG)
    expected = {"llama3_8b": 8.03e9, "llama3_70b": 70.55e9, "glm4_9b": 9.40e9, "mistral_7b": 7.25e9}[name]
    assert model.num_params() == pytest.approx(expected, rel=2e-3)


def _readme_block(title):
    text = (ROOT / "launch" / "README.md").read_text()
    m = re.search(rf"<!-- plan: {re.escape(title)} -->\n(.*?)<!-- end plan -->", text, re.S)
    assert m, f"launch/README.md has no plan block {title!r}"
    return m.group(1)


@pytest.mark.parametrize("name, topology", [("llama3_8b", "v5p-8"), ("llama3_70b", "v5p-128")])
def test_paper_plans_fit_and_readme_tables_are_current(name, topology):
    module = _load(name)
    plan = make_plan(module.get_config(), config_from_hf_dict(module.HF_CONFIG), parse_topology(topology))
    assert plan.flags == (), plan.flags
    assert _readme_block(f"configs/{name}.py --topology={topology}") == render(plan, markdown=True), (
        f"regenerate with: python -m spar_jax.plan --config=configs/{name}.py --topology={topology} --format=markdown"
    )


def test_cli_reports_errors_in_one_line():
    r = subprocess.run(
        [sys.executable, "-m", "spar_jax.plan", "--config=configs/llama3_8b.py", "--topology=v9-8"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert r.returncode == 2 and r.stderr.strip().startswith("error: topology 'v9-8': expected one of"), r.stderr


# -- ahead-of-time lowering on 8 fake devices ----------------------------------------------------------------------


def _two_layer(name):
    module = _load(name)
    model = config_from_hf_dict(dict(module.HF_CONFIG, num_hidden_layers=2))
    cfg = config_lib.parse(module.get_config())
    return model, make_mesh(cfg.mesh.shape), cfg


FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_configs_sharded_train_step_compiles_at_full_width(name):
    """The real DPO step (forward + backward + AdamW) as the config sets it up (mesh, dtypes, remat, gradient
    accumulation), at full width with 2 layers."""
    from spar_jax.planning.lowering import lower_train_step

    model, mesh, cfg = _two_layer(name)
    assert len(jax.devices()) == 8
    accum = cfg.dpo["grad_accum_steps"]
    lowered = lower_train_step(
        model,
        mesh,
        cfg.mesh.rules,
        examples=8 * accum,
        length=32,
        accum=accum,
        dtype=cfg.actor.dtype,
        param_dtype=cfg.actor.param_dtype,
        remat=cfg.actor.remat,
        chunk_size=cfg.dpo["logits_chunk_size"],
    )
    state_info, metrics_info = lowered.out_info
    assert {"loss", "dpo_loss", "grad_norm", "learning_rate"} <= set(metrics_info)
    assert state_info["params"]["layers"]["q"].shape == (
        2,
        model.hidden_size,
        model.num_attention_heads,
        model.head_dim,
    )
    compiled = lowered.compile(FAST_COMPILE)
    q = compiled.output_shardings[0]["params"]["layers"]["q"]
    tensor = "tensor" if dict(mesh.shape)["tensor"] > 1 else None
    assert q.spec == jax.sharding.PartitionSpec(None, "fsdp", tensor, None)  # (layers, embed, heads, head_dim)


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_configs_decode_loop_lowers(name):
    from spar_jax.planning.lowering import lower_decode

    model, mesh, cfg = _two_layer(name)
    decode = lower_decode(model, mesh, cfg.mesh.rules, prompts=8, prompt_len=32, n=2, max_new=16, dtype=cfg.actor.dtype)
    assert decode.out_info.tokens.shape == (16, 16)


def test_70b_sharded_decode_loop_compiles():
    """Prefill + KV-cache decode loop with 4-way tensor parallelism (8 heads of 64 and 2 kv heads per chip)."""
    from spar_jax.planning.lowering import lower_decode

    model, mesh, cfg = _two_layer("llama3_70b")
    assert dict(mesh.shape) == {"data": 1, "fsdp": 2, "tensor": 4}
    compiled = lower_decode(model, mesh, cfg.mesh.rules, prompts=4, prompt_len=16, n=2, max_new=8).compile(FAST_COMPILE)
    assert compiled.output_shardings.tokens.spec[0] == "fsdp"  # 8 decode rows over the batch axes (data 1 x fsdp 2)


# -- plans from compiled programs ----------------------------------------------------------------------------------


def test_tpu_topology_names():
    from spar_jax.planning.compiled import tpu_topology_name

    assert tpu_topology_name(parse_topology("v5p-8")) == "v5p:2x2x1"
    assert tpu_topology_name(parse_topology("v5p-128")) == "v5p:4x4x4"
    assert tpu_topology_name(parse_topology("v5e-8")) == "v5e:2x4"
    assert tpu_topology_name(parse_topology("v6e-6")) is None


def test_compiled_programs_on_8_fake_devices_next_to_the_estimate():
    """The real DPO and SFT steps and the sampling program of a tiny run, compiled for a v5p-16 (8 chips) on the 8
    fake CPU devices: XLA's per-device arguments hold at least the planner's per-chip parameters (+ optimizer state
    for training), and the report prints both."""
    from spar_jax.planning import compiled
    from spar_jax.planning.estimate import sampling_shapes

    config = _tiny_config(
        **{
            "mesh.shape": (1, -1, 2),
            "engine.batch_size": 16,
            "dpo.batch_size": 8,
            "sft.batch_size": 8,
            "dpo.max_length": 64,
            "sft.max_length": 64,
            "dpo.max_prompt_length": 32,
            "sft.max_prompt_length": 32,
        }
    )
    config.actor.param_dtype = config.refiner.param_dtype = "float32"
    model = config_from_hf_dict(TINY)
    topology = parse_topology("v5p-16")
    plan = make_plan(config, model, topology, SHORT)
    devices, what = compiled.compile_devices(topology)
    assert len(devices) == 8 and "fake CPU devices" in what  # no libtpu in the test environment
    cfg = config_lib.parse(config)
    stage = compiled.largest_sampling_stage(sampling_shapes(cfg, SHORT), cfg.engine.batch_size)
    programs = compiled.compile_programs(cfg, model, plan, devices, sampling_stage=stage, options=FAST_COMPILE)
    names = [p.name for p in programs]
    assert names[:2] == ["train actor (DPO) step", "train refiner (SFT) step"]
    assert names[2].startswith(f"sampling: {stage['name']} (15 rows")  # 16 // 3 prompts x n = 3
    train = dict(plan.phases[0].items)
    assert programs[0].arguments >= train["params"] + train["optimizer state"]
    assert programs[0].aliased > 0  # the train state is donated
    sampling = dict(plan.phases[-1].items)
    assert programs[2].arguments >= sampling["params: actor engine (bfloat16)"]
    assert all(p.temp > 0 and p.analytic > 0 for p in programs)
    text = compiled.render(programs, what)
    assert "MiB per device" in text and "train actor (DPO) step" in text


def test_compile_needs_enough_devices():
    from spar_jax.planning import compiled

    with pytest.raises(ValueError, match="xla_force_host_platform_device_count=64"):
        compiled.compile_devices(parse_topology("v5p-128"))
