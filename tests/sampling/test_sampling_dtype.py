"""The engine's weight copy in ``engine.dtype``: the CPU default keeps the model's dtype (and greedy parity), a
bfloat16 engine holds bfloat16 weights and cache, leaves the caller's float32 weights alone, and its log-probs match
the float32 model's to bfloat16 precision; bad dtypes are refused."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spar_jax.models import from_pretrained
from spar_jax.sampling import Engine
from spar_jax.sampling.precision import engine_dtype

from tiny_checkpoints import write_checkpoint


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return from_pretrained(write_checkpoint(tmp_path_factory.mktemp("d") / "llama", "llama", seed=3))


def _prompts():
    rng = np.random.default_rng(0)
    return [rng.integers(3, 256, n).tolist() for n in (4, 9, 13)]


def _float_dtypes(model):
    return {a.dtype for a in jax.tree.leaves(model) if jnp.issubdtype(a.dtype, jnp.floating)}


def test_cpu_default_keeps_the_model_dtype_and_its_tokens(model):
    assert jax.default_backend() == "cpu"
    engine = Engine(model, None, batch_size=4, progress=False)
    assert engine.dtype == jnp.float32 and engine.model is model  # no copy needed
    explicit = Engine(model, None, batch_size=4, dtype="float32", progress=False)
    kwargs = dict(max_new_tokens=8)
    assert [r.completions[0].token_ids for r in engine.generate(_prompts(), **kwargs)] == [
        r.completions[0].token_ids for r in explicit.generate(_prompts(), **kwargs)
    ]


@pytest.mark.parametrize("batching", ["continuous", "static"])
def test_bfloat16_engine_runs_and_matches_float32_logprobs(model, batching):
    engine = Engine(model, None, batch_size=4, dtype="bfloat16", batching=batching, progress=False)
    assert _float_dtypes(engine.model) == {jnp.dtype(jnp.bfloat16)} and engine.model.dtype == jnp.bfloat16
    assert _float_dtypes(model) == {jnp.dtype(jnp.float32)}  # the master weights are untouched
    results = engine.generate(_prompts(), max_new_tokens=6, temperature=1.0, seed=1)
    for prompt, r in zip(_prompts(), results, strict=True):
        c = r.completions[0]
        n = len(c.token_ids)  # 6, or fewer when the sample drew the end-of-sequence token
        assert n == 6 or (1 <= n < 6 and c.finish_reason == "stop")
        # The float32 model's log-probs of the same tokens, teacher-forced.
        ids = np.asarray([prompt + list(c.token_ids[:-1])], np.int32)
        logits = np.asarray(model(ids))[0, len(prompt) - 1 :].astype(np.float64)
        ref = logits[np.arange(n), c.token_ids] - np.log(np.exp(logits).sum(-1))
        np.testing.assert_allclose(c.logprobs, ref, atol=0.1)  # bf16 weights: ~3 significant digits per product


def test_engine_dtype_choice_and_refusal(model):
    assert engine_dtype("auto", model) == jnp.float32  # CPU
    assert engine_dtype(None, model) == jnp.float32
    assert engine_dtype("bfloat16", model) == jnp.bfloat16
    for bad in ("int8", "half-ish"):
        with pytest.raises(ValueError, match="Engine: dtype="):
            Engine(model, None, dtype=bad, progress=False)


@pytest.mark.parametrize("dtype, itemsize", [("auto", 2), ("float32", 4)])
def test_planner_counts_the_engine_copies_in_engine_dtype(dtype, itemsize):
    from test_plan import SHORT, TINY, _tiny_config

    from spar_jax.models.config import config_from_hf_dict
    from spar_jax.parallel import DEFAULT_RULES
    from spar_jax.planning import memory as M
    from spar_jax.planning.estimate import make_plan
    from spar_jax.planning.hardware import parse_topology

    cfg = config_from_hf_dict(TINY)
    plan = make_plan(
        _tiny_config(**{"mesh.shape": (1, -1, 2), "engine.batch_size": 60, "engine.dtype": dtype}),
        cfg,
        parse_topology("v5p-16"),
        SHORT,
    )
    sampling = dict(next(p for p in plan.phases if p.name == "sampling").items)
    name = "bfloat16" if dtype == "auto" else dtype
    layout = M.param_layout(cfg, M.abstract_mesh((1, 4, 2), 8), DEFAULT_RULES, dtype=name, param_dtype=name)
    assert sampling[f"params: actor engine ({name})"] == layout.chip_bytes
    assert sampling[f"params: refiner engine ({name})"] == layout.chip_bytes
    mesh = M.abstract_mesh((1, 4, 2), 8)
    f32 = M.param_layout(cfg, mesh, DEFAULT_RULES, dtype="float32", param_dtype="float32").chip_bytes
    assert layout.chip_bytes == f32 * itemsize // 4
