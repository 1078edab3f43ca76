"""Ahead-of-time lowering of the real sharded train step and decode loop with abstract shapes (no weights).

``lower_train_step`` jits ``spar_jax.training.step.make_train_step`` with the trainer's state shardings and
``lower_decode`` jits ``spar_jax.sampling.loop.decode`` (prefill + KV-cache decode loop), both on a real mesh, with
``jax.ShapeDtypeStruct`` arguments that carry their ``NamedSharding``. ``.compile()`` on the result runs XLA's SPMD
partitioner, which is where a sharding that cannot work fails, without allocating a parameter.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from spar_jax.models.pretrained import abstract_model
from spar_jax.parallel import Rules, ShardingContext, param_shardings
from spar_jax.sampling import loop as sampling_loop
from spar_jax.training import step as S


def _with_shardings(tree, shardings):
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def _abstract_params(cfg, mesh, rules, *, dtype, param_dtype, remat):
    model = abstract_model(cfg, dtype=dtype, param_dtype=param_dtype, mesh=mesh, rules=rules, remat=remat)
    graphdef, state, rest = nnx.split(model, nnx.Param, ...)
    leaves = jax.tree.leaves(
        param_shardings(state, ShardingContext(mesh, rules)), is_leaf=lambda s: isinstance(s, NamedSharding)
    )
    params = nnx.to_pure_dict(state)
    pshard = jax.tree.unflatten(jax.tree.structure(params), leaves)
    return graphdef, state, rest, params, pshard


def lower_train_step(
    cfg,
    mesh,
    rules: Rules,
    *,
    kind: str = "dpo",
    examples: int,
    length: int,
    accum: int = 1,
    dtype: str = "bfloat16",
    param_dtype: str | None = "float32",
    remat: str = "full",
    chunk_size: int = 256,
    share_prompt: bool = True,
) -> jax.stages.Lowered:
    """Lower one optimizer step on ``examples`` examples (pairs for DPO) of ``length`` tokens, ``accum``
    micro-batches, exactly as ``Trainer`` jits it (same step function, optimizer and state shardings). DPO with
    ``share_prompt`` (the trainer's default): one packed row of ``length`` tokens per pair."""
    graphdef, state, rest, params, pshard = _abstract_params(
        cfg, mesh, rules, dtype=dtype, param_dtype=param_dtype, remat=remat
    )
    schedule = S.make_schedule("linear", 2e-7, 100, 0.1)
    tx = S.make_optimizer(schedule, weight_decay=0.0, b1=0.9, b2=0.999, eps=1e-8, max_grad_norm=1.0)
    replicated = NamedSharding(mesh, PartitionSpec())
    opt_shapes = jax.eval_shape(tx.init, params)
    opt_shard = optax.tree_map_params(tx, lambda _, s: s, opt_shapes, pshard, transform_non_params=lambda _: replicated)
    shardings = {"step": replicated, "params": pshard, "opt_state": opt_shard, "rng": replicated}
    train_state = _with_shardings(
        {
            "step": jax.ShapeDtypeStruct((), jnp.int32),
            "params": params,
            "opt_state": opt_shapes,
            "rng": jax.ShapeDtypeStruct((2,), jnp.uint32),
        },
        shardings,
    )
    packed = kind == "dpo" and share_prompt
    per = 2 if kind == "dpo" and not packed else 1
    rows = examples // accum * per
    ctx = ShardingContext(mesh, rules)
    seq = ctx.sharding((None, "batch", "length"), (accum, rows, length))
    small = ctx.sharding((None, "batch", None), (accum, rows // per, 2))
    batch = {
        "input_ids": jax.ShapeDtypeStruct((accum, rows, length), jnp.int32, sharding=seq),
        "loss_mask": jax.ShapeDtypeStruct((accum, rows, length), jnp.bool_, sharding=seq),
        "attention_mask": jax.ShapeDtypeStruct((accum, rows, length), jnp.bool_, sharding=seq),
        "valid": jax.ShapeDtypeStruct(
            (accum, rows // per), jnp.bool_, sharding=ctx.sharding((None, "batch"), (accum, rows // per))
        ),
    }
    if kind == "dpo":
        batch["ref_logps"] = jax.ShapeDtypeStruct((accum, rows // per, 2), jnp.float32, sharding=small)
    if packed:
        batch["segment_ids"] = jax.ShapeDtypeStruct((accum, rows, length), jnp.int32, sharding=seq)
    spec = S.LossSpec(kind, chunk_size=chunk_size)
    step = S.make_train_step(graphdef, jax.tree.structure(state), rest, tx, schedule, spec)
    return jax.jit(step, out_shardings=(shardings, replicated), donate_argnums=(0,)).lower(train_state, batch)


def lower_decode(
    cfg,
    mesh,
    rules: Rules,
    *,
    prompts: int,
    prompt_len: int,
    n: int,
    max_new: int,
    dtype: str = "bfloat16",
    first_segment: int = 256,
) -> jax.stages.Lowered:
    """Lower ``sampling.loop.decode`` (prefill of ``prompts`` prompts, ``n`` samples each, KV-cache decode of up
    to ``max_new`` tokens) with the model's parameters laid out on ``mesh``."""
    model = abstract_model(cfg, dtype=dtype, param_dtype=dtype, mesh=mesh, rules=rules)
    graphdef, state = nnx.split(model)
    shardings = jax.tree.leaves(param_shardings(state, model.shard), is_leaf=lambda s: isinstance(s, NamedSharding))
    leaves = [jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s) for x, s in zip(jax.tree.leaves(state), shardings)]
    state = jax.tree.unflatten(jax.tree.structure(state), leaves)
    ctx = model.shard
    shape = sampling_loop.LoopShape(n=n, max_new=max_new, first_segment=first_segment)

    def run(state, prompt_ids, prompt_mask, live, row_ids, params):
        return sampling_loop.decode(
            nnx.merge(graphdef, state), prompt_ids, prompt_mask, live, row_ids, params, shape=shape
        )

    tokens = ctx.sharding(("batch", "length"), (prompts, prompt_len))
    rows = ctx.sharding(("batch",), (prompts,))
    scalar = lambda dt: jax.ShapeDtypeStruct((), dt)  # noqa: E731
    params = sampling_loop.Sampling(
        temperature=scalar(jnp.float32),
        top_k=scalar(jnp.int32),
        top_p=scalar(jnp.float32),
        max_new_tokens=scalar(jnp.int32),
        stop_ids=jax.ShapeDtypeStruct((4,), jnp.int32),
        seed=scalar(jnp.int32),
    )
    return jax.jit(run).lower(
        state,
        jax.ShapeDtypeStruct((prompts, prompt_len), jnp.int32, sharding=tokens),
        jax.ShapeDtypeStruct((prompts, prompt_len), jnp.bool_, sharding=tokens),
        jax.ShapeDtypeStruct((prompts,), jnp.bool_, sharding=rows),
        jax.ShapeDtypeStruct((prompts,), jnp.int32, sharding=rows),
        params,
    )
